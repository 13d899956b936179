"""How a check calls a submission's functions without ever holding the submission's objects.

A check passes numpy arrays wrapped in `Arg` (each becomes a tinygrad Tensor on the
student's side) and gets back `Out`s: what the function returned, as numpy, with the
gradients asked for already computed. `invoke` is the student's side of one call. Under
pytest it runs in this process; when grading it runs in the sandboxed child process
(grade.py), and `encode`/`decode` carry the values across as JSON, never pickle, so the
child can send nothing but numbers and type names back to the process that decides.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field

import numpy as np

SAFE_DTYPES = {np.dtype(t).str: np.dtype(t) for t in (bool, np.int8, np.int16, np.int32, np.int64, np.uint8,
                                                      np.uint16, np.uint32, np.uint64, np.float16, np.float32,
                                                      np.float64)}


class Arg:
    """A Tensor argument: `value` (numpy) becomes Tensor(value) on the student's side.
    grad=True: the gradient of every scalar float result w.r.t. it comes back in Out.grads.
    grad_of: the Tensor gets this as its .grad; what .grad holds after the call comes back
    in Out.after (for functions that update gradients in place)."""

    def __init__(self, value, grad: bool = False, grad_of=None):
        self.value, self.grad = np.array(value, order="C"), grad
        self.grad_of = None if grad_of is None else np.array(grad_of, order="C")


class SumGrad:
    """Not an argument: asks for the gradient of the sum of result item `index` (a Tensor in
    the returned tuple) w.r.t. every grad=True Arg; it comes back in that item's Out.grads."""

    def __init__(self, index: int):
        self.index = index


class Cfg:
    """A tinyar Config argument, built on the student's side from these fields."""

    def __init__(self, **fields):
        self.fields = fields


@dataclass
class Out:
    """One returned value. kind: 'tensor', 'ndarray', 'none', or another type's name."""
    kind: str
    value: np.ndarray | None = None
    grads: list | None = None        # d(value)/d(each grad Arg), for a scalar float tensor
    grad_error: str = ""             # why no gradient could be taken
    items: list = field(default_factory=list)   # kind 'tuple': the items
    after: list = field(default_factory=list)   # each grad_of Arg's .grad after the call (None: not a Tensor)

    def __repr__(self):
        return f"Out({self.kind}, shape={None if self.value is None else self.value.shape})"


class StudentError(Exception):
    """The submission's function raised (seen from the grading process): kind is its type name."""

    def __init__(self, kind: str, message: str, line: int | None = None):
        super().__init__(message)
        self.kind, self.message, self.line = kind, message, line


# ── the student's side of a call ─────────────────────────────────────────────────────────

def invoke(fn, args: list) -> Out:
    """Call fn with the Args as Tensors; describe what it returned (gradients included).

    Kernels are generated without tinygrad's optimizations (NOOPT): the checks' shapes are
    tiny, and optimizing each kernel took longer than running it (half the grading time)."""
    from tinygrad.helpers import Context
    with Context(NOOPT=1):
        return _invoke(fn, args)


def _invoke(fn, args: list) -> Out:
    from tinygrad import Tensor, dtypes

    wrt, with_grad = [], []
    sum_grads = [a.index for a in args if isinstance(a, SumGrad)]
    args = [a for a in args if not isinstance(a, SumGrad)]

    def to_student(a):
        if isinstance(a, Arg):
            t = Tensor(a.value)
            if a.grad:
                wrt.append(t)
            if a.grad_of is not None:
                t.grad = Tensor(a.grad_of)
                with_grad.append(t)
            return t
        if isinstance(a, Cfg):
            from tinyar.config import Config
            return Config(**a.fields)
        if isinstance(a, list):
            return [to_student(x) for x in a]
        return a

    def describe(x) -> Out:
        if isinstance(x, Tensor):
            gs, error = None, ""
            if wrt and x.shape == () and dtypes.is_float(x.dtype):
                try:
                    gs = x.gradient(*wrt)
                except Exception as e:  # noqa: BLE001 — any failure means: no usable gradient
                    error = f"{type(e).__name__}: {str(e).strip()[:200]}"
            if gs is not None:
                Tensor.realize(x, *gs)                # value and gradients in one schedule
            return Out("tensor", np.asarray(x.numpy()), None if gs is None else [np.asarray(g.numpy()) for g in gs],
                       error)
        if isinstance(x, np.ndarray):
            return Out("ndarray", x.copy())
        if isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool):
            return Out(type(x).__name__, np.asarray(float(x)))
        if isinstance(x, (tuple, list)):
            return Out("tuple", items=[describe(i) for i in x])
        return Out("none" if x is None else type(x).__name__)

    result = fn(*[to_student(a) for a in args])
    if isinstance(result, (tuple, list)) and not wrt:   # several results: one schedule, shared work done once
        try:
            Tensor.realize(*[x for x in result if isinstance(x, Tensor)])
        except Exception:  # noqa: BLE001 — describe() meets the same error on the Tensor that has it
            pass
    out = describe(result)
    for i in sum_grads:            # d sum(item i) / d each grad Arg, for a float Tensor item of a tuple
        x = result[i] if isinstance(result, (tuple, list)) and -len(result) <= i < len(result) else None
        if out.kind == "tuple" and isinstance(x, Tensor) and dtypes.is_float(x.dtype) and wrt:
            try:
                gs = x.sum().gradient(*wrt)
                Tensor.realize(*gs)
                out.items[i].grads = [np.asarray(g.numpy()) for g in gs]
            except Exception as e:  # noqa: BLE001 — any failure means: no usable gradient
                out.items[i].grad_error = f"{type(e).__name__}: {str(e).strip()[:200]}"
    out.after = [np.asarray(t.grad.numpy()) if isinstance(t.grad, Tensor) else None for t in with_grad]
    return out


# ── carrying calls and results across a pipe as JSON ─────────────────────────────────────

def _array(a: np.ndarray) -> dict:
    a = np.array(a, order="C")                 # (keeps 0-d arrays 0-d)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()}


def _from_array(d: dict) -> np.ndarray:
    dtype = SAFE_DTYPES.get(d["dtype"])
    if dtype is None:
        raise ValueError(f"unexpected dtype {d['dtype']!r}")
    shape = tuple(int(s) for s in d["shape"])
    return np.frombuffer(base64.b64decode(d["data"]), dtype=dtype).reshape(shape).copy()


def encode_args(args: list) -> list:
    def one(a):
        if isinstance(a, Arg):
            return {"arg": _array(a.value), "grad": a.grad,
                    "grad_of": None if a.grad_of is None else _array(a.grad_of)}
        if isinstance(a, Cfg):
            return {"config": a.fields}
        if isinstance(a, SumGrad):
            return {"sum_grad": int(a.index)}
        if isinstance(a, np.random.Generator):
            return {"rng": a.bit_generator.state}
        if isinstance(a, list):
            return {"list": [one(x) for x in a]}
        return {"value": a}
    return [one(a) for a in args]


def decode_args(args: list) -> list:
    def one(d):
        if "arg" in d:
            return Arg(_from_array(d["arg"]), d["grad"], None if d["grad_of"] is None else _from_array(d["grad_of"]))
        if "config" in d:
            return Cfg(**d["config"])
        if "sum_grad" in d:
            return SumGrad(int(d["sum_grad"]))
        if "rng" in d:
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = d["rng"]
            return rng
        if "list" in d:
            return [one(x) for x in d["list"]]
        return d["value"]
    return [one(a) for a in args]


def encode_out(out: Out) -> dict:
    return {"kind": out.kind, "value": None if out.value is None else _array(out.value),
            "grads": None if out.grads is None else [_array(g) for g in out.grads],
            "grad_error": out.grad_error, "items": [encode_out(i) for i in out.items],
            "after": [None if a is None else _array(a) for a in out.after]}


def decode_out(d: dict) -> Out:
    """Rebuild an Out from what the child sent; anything malformed raises ValueError/KeyError/TypeError."""
    kind = str(d["kind"])[:80]
    value = None if d["value"] is None else _from_array(d["value"])
    grads = None if d["grads"] is None else [_from_array(g) for g in d["grads"]]
    return Out(kind, value, grads, str(d["grad_error"])[:300], [decode_out(i) for i in d["items"]],
               [None if a is None else _from_array(a) for a in d["after"]])


def local(functions: dict) -> dict:
    """The functions as a check calls them, run in this process (pytest, the reference)."""
    return {name: (lambda f: lambda *args: invoke(f, list(args)))(fn) for name, fn in functions.items()}
