"""Kernel options tuned once and kept as data: tinygrad's own `opts_to_apply`, per kernel.

tinygrad picks a schedule for every kernel (how a matmul is split into work-groups, what is
kept in registers) by a fixed heuristic, or by BEAM search at run time, which takes minutes a
shape. `python cli.py tune` runs a short search once, for the kernels of one model's training
step on one device, and writes the winners to a JSON table: kernel -> list of tinygrad `Opt`s.
At run time `enable()` reads the tables and, just before tinygrad compiles a kernel found in
one, sets its `KernelInfo.opts_to_apply`, the field tinygrad's own optimizer applies instead
of its heuristic (the same hook point as tinygrad's BEAM). Every kernel not in a table, and
every other device or tinygrad version, keeps tinygrad's default.

A kernel is named by tinygrad's content hash of its AST (`UOp.key`): the same model shape,
loss settings and dtype give the same kernels in every process; anything else gives other
hashes, so a table can never apply to a kernel it was not measured on.

Tables: tinyar/tuned/*.json (shipped, for the default model on this project's machine) and
~/.cache/tinyar/tuned/*.json (written by `tune`); TINYAR_TUNED=0 turns them off.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

SHIPPED = Path(__file__).parent / "tuned"
FORMAT = 1
_table: dict[str, tuple] = {}     # kernel key (hex) -> tuple of Opt, for this device
_applied: set[str] = set()         # keys of kernels compiled with tabled options in this process
_installed = False
_active = True


def user_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tinyar" / "tuned"


def device_id(device: str) -> str:
    """What a table is valid for: the tinygrad device kind, the hardware tinygrad compiles for,
    and tinygrad's version. e.g. 'CL|pthread-skylake-avx512-AMD EPYC 7B13|tinygrad 0.14.0'."""
    from tinygrad import Device
    dev = Device[device]
    name = getattr(dev, "device_name", None) or getattr(dev.renderer, "target", "")
    return f"{device.split(':')[0]}|{name}|tinygrad {version('tinygrad')}"


def _opts_from_json(rows: list) -> tuple:
    from tinygrad.codegen.opt import Opt, OptOps
    return tuple(Opt(OptOps[op], axis, tuple(arg) if isinstance(arg, list) else arg) for op, axis, arg in rows)


def opts_to_json(opts) -> list:
    return [[o.op.name, o.axis, list(o.arg) if isinstance(o.arg, tuple) else o.arg] for o in opts]


def tables() -> Iterator[Path]:
    """The table files that could apply: shipped first, then the user's (which win)."""
    for folder in (SHIPPED, user_dir()):
        if folder.is_dir():
            yield from sorted(folder.glob("*.json"))


def load(device: str) -> int:
    """Read every table made for this device into the lookup. -> number of kernels."""
    _table.clear()
    for p in tables():
        _table.update({key: row["opts"] for key, row in read_rows(p, device).items()})
    return len(_table)


def _with_tuned_opts(call, sink):
    """pattern: a kernel about to be compiled gets its tuned options, if it has any"""
    if not _active or sink.arg is None or sink.arg.opts_to_apply is not None or sink.arg.beam:
        return None
    opts = _table.get(key := sink.key.hex())
    if opts is None:
        return None
    _applied.add(key)
    return call.replace(src=(sink.replace(arg=replace(sink.arg, opts_to_apply=opts)), *call.src[1:]))


def install() -> None:
    """Wrap tinygrad's lower-and-compile step so tabled kernels are built with their options
    (tinygrad itself marks kernels for BEAM the same way, one graph rewrite before it). Idempotent."""
    global _installed
    if _installed:
        return
    import tinygrad.engine.realize as realize
    from tinygrad.uop.ops import Ops, PatternMatcher, UPat, graph_rewrite
    pm = PatternMatcher([(UPat(Ops.CALL, src=(UPat(Ops.SINK, name="sink"),), name="call", allow_any_len=True),
                          _with_tuned_opts)])
    original = realize.lower_and_compile

    def lower_and_compile(linear):
        if _table and _active:
            linear = graph_rewrite(linear, pm, walk=True, name="tinyar tuned opts")
        return original(linear)
    realize.lower_and_compile = lower_and_compile
    _installed = True


def enable(device: str) -> int:
    """Apply the tables made for `device` from now on. -> number of tuned kernels known."""
    if os.environ.get("TINYAR_TUNED", "") == "0":
        return 0
    n = load(device)
    if n:
        install()
    return n


def applied() -> int:
    """How many distinct kernels this process has compiled with tabled options so far."""
    return len(_applied)


@contextlib.contextmanager
def active(on: bool):
    """Kernels compiled inside use (on) or ignore (off) the tables: for A/B in one process."""
    global _active
    before, _active = _active, on
    try:
        yield
    finally:
        _active = before


# ---------------------------------------------------------------- the search (`cli.py tune`)

def step_kernels(run_step: Callable[[], None]) -> list:
    """The kernels tinygrad compiles while `run_step` runs: [(SINK AST, how many times one
    plan launches it)], e.g. 4 for a kernel of each of 4 identical layers."""
    import tinygrad.engine.realize as realize
    from tinygrad.uop.ops import Ops
    seen: dict[bytes, list] = {}
    original = realize.lower_and_compile

    def spy(linear):
        counts: dict[bytes, list] = {}
        for c in linear.src:
            if c.op is Ops.CALL and c.src[0].op is Ops.SINK and c.src[0].arg is not None:
                counts.setdefault(c.src[0].key, [c.src[0], 0])[1] += 1
        for key, (ast, n) in counts.items():
            seen[key] = [ast, max(n, seen.get(key, [None, 0])[1])]
        return original(linear)
    realize.lower_and_compile = spy
    try:
        run_step()
    finally:
        realize.lower_and_compile = original
    return [tuple(v) for v in seen.values()]


# the moves tried from each candidate: a small, CPU-minded subset of tinygrad's BEAM actions
def _actions() -> list:
    from tinygrad.codegen.opt import Opt, OptOps
    acts = [Opt(OptOps.UPCAST, axis, amt) for amt in (2, 4, 8) for axis in range(4)]
    acts += [Opt(OptOps.UNROLL, axis, amt) for amt in (2, 4, 8) for axis in range(2)]
    acts += [Opt(OptOps.LOCAL, axis, amt) for amt in (2, 4, 8, 16) for axis in range(3)]
    acts += [Opt(OptOps.GROUPTOP, axis, amt) for amt in (16, 32) for axis in range(2)]   # split a long reduction
    return acts


class _Grab(Exception):
    pass


def _scheduler(ast, device: str):
    """tinygrad's Scheduler for a kernel exactly as its optimizer sees it: after the rewrites
    tinygrad runs before applying options (split ranges, symbolic), so the axes that options
    name are the ones they will meet at run time."""
    import tinygrad.codegen as codegen
    from tinygrad import Device
    from tinygrad.codegen.opt.postrange import Scheduler
    ren, original = Device[device].renderer, codegen.apply_opts

    def grab(sink, ren, beam=0):
        raise _Grab(sink)
    codegen.apply_opts = grab
    try:
        codegen.full_rewrite_to_sink(ast, ren)
        raise RuntimeError("tinygrad did not reach apply_opts")
    except _Grab as e:
        sink = e.args[0]
    finally:
        codegen.apply_opts = original
    s = Scheduler(sink, ren)
    s.convert_loop_to_global()
    return s


def compiles_with(ast, device: str, opts) -> bool:
    """Does tinygrad's own path (opts_to_apply) build this kernel with these options?"""
    from tinygrad import Device
    from tinygrad.codegen import to_program
    try:
        to_program(ast.replace(arg=replace(ast.arg, opts_to_apply=tuple(opts))), Device[device].renderer)
        return True
    except Exception:
        return False


def _time(scheduler, rawbufs, reps: int) -> float:
    """seconds: the best of `reps` runs of the kernel this schedule compiles to (inf if it fails)"""
    from tinygrad.codegen.opt.search import _time_program, _try_compile
    _, compiled = _try_compile((0, scheduler))
    if compiled is None:
        return math.inf
    try:
        return min(_time_program(compiled[0], {}, rawbufs, allow_test_size=False, cnt=reps))
    except Exception:
        return math.inf


def search(ast, device: str, deadline: float, width: int = 2, reps: int = 5) -> dict:
    """Greedy beam search over `_actions()` for one kernel until no move helps or `deadline`
    (time.monotonic()). -> {"default_s", "best_s", "opts"}: opts is None when nothing beat
    tinygrad's own heuristic by 3%."""
    from tinygrad.codegen.opt import KernelOptError
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
    from tinygrad.codegen.opt.postrange import args_from_ast
    rawbufs, var_vals = args_from_ast(ast, device)
    if var_vals:
        raise ValueError("symbolic kernels are not tuned")
    rawbufs = [b.ensure_allocated() for b in rawbufs]
    base = _scheduler(ast, device)
    heuristic = hand_coded_optimizations(base.copy())
    default_s = _time(heuristic, rawbufs, reps)
    beam = [(heuristic, default_s), (base, _time(base, rawbufs, reps))]
    seen = {tuple(s.applied_opts) for s, _ in beam}
    best = min(beam, key=lambda x: x[1])
    while time.monotonic() < deadline:
        timed = []
        for s, _ in beam:
            for act in _actions():
                if time.monotonic() >= deadline:
                    break
                cand = s.copy()
                try:
                    cand.apply_opt(act)
                except (KernelOptError, AssertionError, ValueError, IndexError):
                    continue
                if tuple(cand.applied_opts) in seen:
                    continue
                seen.add(tuple(cand.applied_opts))
                timed.append((cand, _time(cand, rawbufs, reps)))
        timed.sort(key=lambda x: x[1])
        if not timed or timed[0][1] >= best[1] * 0.99:
            break
        best, beam = timed[0], timed[:width]
    # confirm the winner against the default once more, timed side by side
    again_default, again_best = _time(heuristic, rawbufs, 3 * reps), _time(best[0], rawbufs, 3 * reps)
    keep = (best[0] is not heuristic and again_best < again_default * 0.97 and best[1] < default_s * 0.97
            and compiles_with(ast, device, best[0].applied_opts))
    return {"default_s": min(default_s, again_default), "best_s": min(best[1], again_best),
            "opts": tuple(best[0].applied_opts) if keep else None}


def read_rows(path: Path, device: str) -> dict:
    """The rows of a table made for this device, options as Opts (empty if none, another device,
    or damaged: a damaged or foreign table only costs speed, tinygrad's defaults)."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") == FORMAT and data.get("device") == device_id(device):
            return {k: {**v, "opts": _opts_from_json(v["opts"])} for k, v in data["kernels"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return {}


def write_table(path: Path, device: str, model: dict, kernels: dict) -> None:
    """kernels: key -> {"launches", "opts" (Opt tuple), "default_ms", "tuned_ms"}; temp file + rename."""
    data = {"format": FORMAT, "device": device_id(device), "model": model,
            "kernels": {k: {**v, "opts": opts_to_json(v["opts"])} for k, v in kernels.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def rank(kernels: list, device: str, on_progress: Callable[[int, int], None] = lambda i, n: None) -> list:
    """(seconds a step spends in it by default, ast, launches) for every kernel, costliest first."""
    from tinygrad.codegen.opt.heuristic import hand_coded_optimizations
    from tinygrad.codegen.opt.postrange import args_from_ast
    out = []
    for i, (ast, n) in enumerate(kernels):
        on_progress(i, len(kernels))
        rawbufs, var_vals = args_from_ast(ast, device)
        if var_vals:
            continue
        try:
            s = _scheduler(ast, device)
        except Exception:   # a kernel tinygrad builds some other way (e.g. a custom one)
            continue
        out.append((n * _time(hand_coded_optimizations(s), [b.ensure_allocated() for b in rawbufs], 3), ast, n))
    on_progress(len(kernels), len(kernels))
    return sorted((x for x in out if x[0] < math.inf), key=lambda x: -x[0])


def tune(kernels: list, device: str, seconds: float, per_kernel: float = 60.0,
         on_progress: Callable[[str], None] = lambda msg: None, done: frozenset = frozenset()) -> dict:
    """Search the costliest kernels first until `seconds` are spent, skipping the keys in `done`
    (already in the table being extended). -> new table rows for write_table"""
    end = time.monotonic() + seconds
    kernels = [(k, n) for k, n in kernels if k.key.hex() not in done]
    ranked = rank(kernels, device, lambda i, n: on_progress(f"timing kernel {i}/{n} with tinygrad's defaults"))
    rows = {}
    for i, (step_s, ast, n) in enumerate(ranked):
        left = end - time.monotonic()
        if left < 5:
            break
        on_progress(f"searching kernel {i + 1}/{len(ranked)} ({step_s * 1e3:.2f} ms of a step by default), {left:.0f} s left")
        r = search(ast, device, time.monotonic() + min(per_kernel, left))
        if r["opts"] is not None:
            rows[ast.key.hex()] = {"launches": n, "opts": r["opts"],
                                   "default_ms": round(r["default_s"] * 1e3, 4), "tuned_ms": round(r["best_s"] * 1e3, 4)}
    return rows
