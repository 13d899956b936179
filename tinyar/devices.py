"""Choosing tinygrad devices, with one-line errors that say what to install or pick instead.

A spec is one device ('CPU', 'CL', 'CPU:LLVM', 'CUDA', 'METAL', ...) or a comma list of
devices of one kind ('CUDA:0,CUDA:1', or 'CPU:0,CPU:1' to try data parallelism on a CPU).
"""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager

BACKENDS = ("CPU", "CPU:LLVM", "CL", "CUDA", "NV", "AMD", "METAL")
HINTS = {  # what usually fixes a backend that fails to start
    "CPU": "install a C compiler: apt-get install -y clang",
    "CPU:LLVM": "install libLLVM >= 16: apt-get install -y libllvm16",
    "CL": "install an OpenCL driver, e.g. apt-get install -y pocl-opencl-icd ocl-icd-libopencl1",
    "CUDA": "needs an NVIDIA GPU with its driver and the CUDA toolkit (nvrtc)",
    "NV": "needs an NVIDIA GPU and tinygrad's NV driver support",
    "AMD": "needs an AMD GPU with ROCm",
    "METAL": "needs macOS on Apple silicon",
}


class DeviceError(RuntimeError):
    """The device can't be used here; the message says what to do."""


def probe(name: str) -> str | None:
    """Run one tiny kernel on `name`. -> None if it works, else a one-line reason."""
    from tinygrad import Tensor
    from tinygrad.helpers import Context
    try:
        # CACHELEVEL=0: really compile, so a missing compiler shows here and not in the first
        # training step (a kernel from tinygrad's disk cache would run without one). PARALLEL=0
        # and captured_stderr: the compiler's warnings are not the user's business, and no
        # compile worker is started now, before `train` points fd 2 at its compiler log.
        # tinygrad reads CPU:LLVM as device CPU with the LLVM compiler, chosen through DEV
        kind, _, rest = name.partition(":")
        renderer = bool(rest) and not rest.isdigit()
        with Context(CACHELEVEL=0, PARALLEL=0, **({"DEV": name} if renderer else {})), captured_stderr([]):
            value = (Tensor([1.0], device=kind if renderer else name) + 1).item()
        if value != 2.0:
            return "computed a wrong result"
        return None
    except ModuleNotFoundError:
        return "tinygrad has no backend of that name"
    except Exception as e:  # backends fail in many ways: missing compiler, driver, library
        return one_line(e)


def one_line(e: Exception) -> str:
    """An exception as one short line: its type and the last line of its message, with a phrase
    said twice in a row said once (tinygrad 0.14: "No interface for NV:0 is available is available")."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    text = re.sub(r"\b(\w+(?: \w+)*)(?: \1\b)+", r"\1", lines[-1] if lines else "")
    return f"{type(e).__name__}: {text}"[:160]


def matmul_speed(name: str, n: int = 512, reps: int = 5) -> float:
    """GFLOP/s of an (n,n) @ (n,n) float32 matmul on `name`, best of `reps` after one to compile.
    A rough guide to which backend is fastest here; `python cli.py bench` times the real step."""
    import time

    from tinygrad import Device, Tensor
    from tinygrad.helpers import Context
    kind, _, rest = name.partition(":")
    device = kind if bool(rest) and not rest.isdigit() else name   # CPU:LLVM: device CPU, DEV picks LLVM
    with Context(PARALLEL=0, **({"DEV": name} if device != name else {})), captured_stderr([]):
        a, b = (Tensor.rand(n, n, device=device).realize() for _ in range(2))
        best = float("inf")
        for _ in range(reps + 1):   # the first run compiles; the best of the rest counts
            t0 = time.perf_counter()
            (a @ b).realize()
            Device[device].synchronize()
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


@contextmanager
def captured_stderr(into: list[str]):
    """Collect what this process and its children (the C compiler tinygrad runs) write to file
    descriptor 2, as lines into `into`, instead of showing it."""
    with tempfile.TemporaryFile("w+b") as f:
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            into.extend(f.read().decode(errors="replace").splitlines())


_probed: dict[tuple, str | None] = {}   # (dtype, device, DEV) -> reason: each is probed once per process


def probe_dtype(dtype: str, device: str | None = None) -> str | None:
    """Compile and run, forward and backward, one small matmul the way a --dtype run does: float32
    weights cast to `dtype`, the product stored in `dtype`, the gradient back in float32.
    -> None if it works and is right, else a one-line reason (the compiler's first error)."""
    from tinygrad.helpers import DEV
    key = (dtype, device, repr(DEV))
    if key not in _probed:
        _probed[key] = _probe_dtype(dtype, device)
    return _probed[key]


def _probe_dtype(dtype: str, device: str | None) -> str | None:
    import numpy as np
    from tinygrad import Tensor, dtypes
    from tinygrad.helpers import Context
    dt, log = getattr(dtypes, dtype), []
    xn, wn = np.arange(8, dtype=np.float32).reshape(2, 4) / 4, np.ones((3, 4), np.float32)
    want = xn @ wn.T                                                      # rows 1.5 and 5.5: exact in half
    try:
        # CACHELEVEL=0: really compile (no kernel from the disk cache). PARALLEL=0: compile in this
        # process, so the compiler's stderr is ours to read (and tinygrad's compile workers, started
        # later, keep the real stderr)
        with Context(CACHELEVEL=0, PARALLEL=0), captured_stderr(log):
            x, w = Tensor(xn, device=device), Tensor(wn, device=device)
            y = (x.cast(dt) @ w.cast(dt).T).contiguous()                  # (2,3) in dtype, stored
            grad = y.float().square().sum().gradient(w)[0]                  # (3,4) float32
            got, got_grad = y.float().numpy(), grad.numpy()
    except Exception as e:   # a missing type, a compiler error, a driver error
        errors = [ln.split("error:", 1)[1].strip() for ln in log if "error:" in ln]
        if errors:
            return f"{'clang' if 'clang' in str(e) else 'compiler'}: {errors[0]}"[:160]
        return one_line(e)
    if y.dtype != dt or not np.array_equal(got, want) or not np.allclose(got_grad, 2 * want.T @ xn):
        return f"a {dtype} matmul computed a wrong result"
    return None


def check_dtype(dtype: str, dev: str | tuple[str, ...]) -> None:
    """Raise DeviceError unless --dtype works on the device(s) `use_device` returned."""
    if dtype == "float32":
        return
    from tinygrad.helpers import DEV
    for d in (dev if isinstance(dev, tuple) else (None,)):   # None: the default device, as training uses it
        reason = probe_dtype(dtype, d)
        if reason:
            name = d or repr(DEV) or dev
            raise DeviceError(f"--dtype {dtype} is not supported on {name} here ({reason}); use --dtype float32 "
                              f"or another device (python cli.py devices)")


def backend_table() -> list[dict]:
    """Every backend tinyar knows with whether it works here, why not, and a hint."""
    rows = []
    for name in BACKENDS:
        reason = probe(name)
        rows.append({"device": name, "works": reason is None, "reason": reason or "",
                     "hint": HINTS[name] if reason else ""})
    return rows


def default_device() -> str:
    """What tinygrad picks with no --device: DEV if set, else its probe order."""
    from tinygrad import Device
    return Device.DEFAULT


def parse(spec: str) -> tuple[str, ...]:
    """'cpu:0, cpu:1' -> ('CPU:0', 'CPU:1')"""
    devs = tuple(d.strip().upper() for d in spec.split(",") if d.strip())
    if not devs:
        raise DeviceError("--device is empty; e.g. --device CPU or --device CUDA:0,CUDA:1")
    if len(devs) > 1 and len({d.split(":")[0] for d in devs}) > 1:
        raise DeviceError(f"data-parallel devices must be of one kind (got {', '.join(devs)})")
    if len(set(devs)) != len(devs):
        raise DeviceError(f"--device lists a device twice ({spec})")
    return devs


def use_device(spec: str | None) -> str | tuple[str, ...]:
    """Check `spec` works and make its first device tinygrad's default.
    None keeps DEV or tinygrad's own choice. -> one device name, or a tuple for several."""
    from tinygrad.helpers import DEV
    if spec:
        devs = parse(spec)
        # tinygrad reads DEV=KIND:X as a renderer (CPU:LLVM), not a device index: CPU:1 goes in
        # the tensors' device, DEV gets the kind. One device by index: refused before any probe, so
        # the hint shows even where that kind of device is absent
        kind, _, rest = devs[0].partition(":")
        if rest.isdigit() and len(devs) == 1 and rest != "0":
            raise DeviceError(f"--device {devs[0]}: one device by index is not supported; use --device {kind} "
                              f"(and e.g. CUDA_VISIBLE_DEVICES={rest} on CUDA), or several: --device {kind}:0,{kind}:1")
        for d in devs:
            reason = probe(d)
            if reason:
                ok = [r["device"] for r in backend_table() if r["works"]]
                raise DeviceError(f"device {d} does not work here ({reason}); working devices: "
                                  + (", ".join(ok) if ok else "none (for the CPU backend install a C compiler: "
                                                              "apt-get install -y clang)") + " (see: python cli.py devices)")
        default = kind if rest.isdigit() else devs[0]
        DEV.value = default
        os.environ["DEV"] = default
        return default if len(devs) == 1 else devs
    try:
        name = default_device()
        reason = probe(name)
    except Exception as e:
        name, reason = "default", (str(e).splitlines() or [type(e).__name__])[0]
    if reason:
        raise DeviceError(f"no usable tinygrad device ({name}: {reason}); for the CPU backend install a C "
                          f"compiler (apt-get install -y clang), or pick one with --device")
    return name
