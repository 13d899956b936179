"""Buffer reuse inside the jitted training step on devices where tinygrad plans no memory.

tinygrad's JIT lays a step's intermediate buffers out in one arena, reusing the memory of
buffers that are no longer needed. It cannot on OpenCL (and WebGPU): their buffers have no
sub-views, so there every intermediate of the step keeps its own allocation for the life of
the JIT (310 MB for the default model on CL, against 138 MB of everything on the CPU device).

This pass does what works without views: an intermediate buffer takes over a whole earlier
buffer of exactly the same size and dtype once that buffer's last reader has run. Kernels run
in order on one queue, so the values every kernel reads are unchanged; only the number of
allocations falls. Buffers that outlive the step (weights, moments, gradients, outputs, inputs)
are never touched, nor are those that copies read or write.
"""
from __future__ import annotations

import contextlib

VIEWLESS = ("CL", "WEBGPU")   # tinygrad.schedule.memory._can_plan: no planning there
_installed = False
_active = True


def _viewless(buf) -> bool:
    devs = (buf.device,) if isinstance(buf.device, str) else buf.device
    return all(d.startswith(VIEWLESS) for d in devs)


def reuse_buffers(linear, held: set):
    """-> linear with buffers of equal (device, size, dtype) shared between disjoint lifetimes"""
    from tinygrad.schedule.memory import _collect_bufs
    from tinygrad.uop.ops import Ops
    first, last, copied = {}, {}, set()
    for i, call in enumerate(linear.src):
        bufs = [b for src in call.src[1:] for b in _collect_bufs(src)]
        if call.src[0].op is not Ops.SINK:        # copies and custom calls: leave their buffers alone
            copied.update(bufs)
        for b in bufs:
            if b not in held and _viewless(b):
                first.setdefault(b, i)
                last[b] = i
    plan = [b for b in first if b not in copied]
    starts: dict[int, list] = {}
    ends: dict[int, list] = {}
    for b in plan:
        starts.setdefault(first[b], []).append(b)
        ends.setdefault(last[b], []).append(b)
    free: dict[tuple, list] = {}          # (device, size, dtype) -> physical buffers free now
    home: dict = {}                       # buffer -> the physical buffer it lives in
    for i in range(len(linear.src)):
        for b in starts.get(i, ()):
            pool = free.get((b.device, b.max_numel(), b.dtype))
            home[b] = pool.pop() if pool else b
        for b in ends.get(i, ()):
            free.setdefault((b.device, b.max_numel(), b.dtype), []).append(home[b])
    swaps = {b: h for b, h in home.items() if h is not b}
    return linear.substitute(swaps, name="tinyar buffer reuse") if swaps else linear


def install() -> None:
    """Run reuse_buffers after tinygrad's own planner wherever tinygrad calls it: a JIT capture
    and every eager schedule (the step before the capture). Idempotent."""
    global _installed
    if _installed:
        return
    import tinygrad.engine.jit as jit
    import tinygrad.schedule as schedule
    for module in (jit, schedule):
        original = module.memory_plan_rewrite

        def memory_plan_rewrite(linear, held_bufs=None, _original=original):
            linear = _original(linear, held_bufs)
            return reuse_buffers(linear, held_bufs or set()) if _active else linear
        module.memory_plan_rewrite = memory_plan_rewrite
    _installed = True


@contextlib.contextmanager
def active(on: bool):
    """Steps captured inside reuse buffers (on) or not (off): for A/B in one process."""
    global _active
    before, _active = _active, on
    try:
        yield
    finally:
        _active = before
