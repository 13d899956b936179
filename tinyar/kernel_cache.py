"""Generated kernels kept between runs, so the second run of a shape starts in seconds.

tinygrad caches compiled C in ~/.cache/tinygrad/cache.db, but the two expensive Python steps
before it, planning the kernels (schedule) and generating their code, are cached only in
memory: every new process redid them, ~1-2 minutes for the first training step here. This
module saves both in-memory caches to one pickle file and loads it at start-up. Entries are
keyed by tinygrad's own content hashes, so a stale entry is never used for a different
graph; the file is per tinygrad and Python version.

    TINYAR_KERNEL_CACHE=0       off
    TINYAR_KERNEL_CACHE=/path   use this file instead of ~/.cache/tinyar/kernels-*.pkl
"""
from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import sys
from importlib.metadata import version
from pathlib import Path

MAX_BYTES = 512 << 20   # start a fresh file rather than load more than this
_enabled = False


def path() -> Path | None:
    """The cache file, or None when TINYAR_KERNEL_CACHE=0."""
    setting = os.environ.get("TINYAR_KERNEL_CACHE", "")
    if setting == "0":
        return None
    if setting:
        return Path(setting)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tinyar" / f"kernels-tinygrad{version('tinygrad')}-py{sys.version_info[0]}{sys.version_info[1]}.pkl"


def _caches() -> tuple[dict, dict]:
    import tinygrad.codegen
    import tinygrad.schedule
    return tinygrad.codegen.to_program_cache, tinygrad.schedule.schedule_cache


def _read(p: Path) -> dict:
    try:
        if p.stat().st_size > MAX_BYTES:
            return {}
        with open(p, "rb") as f:
            data = pickle.load(f)
        return data if isinstance(data, dict) else {}
    except Exception:  # missing, truncated or from another tinygrad: regenerate
        return {}


def load(p: Path | None = None) -> int:
    """Add the file's kernels (default: path()) to tinygrad's in-memory caches. -> number of
    entries loaded."""
    p = p or path()
    if p is None:
        return 0
    data = _read(p)
    programs, schedules = _caches()
    for k, v in data.get("programs", {}).items():
        programs.setdefault(k, v)
    for k, v in data.get("schedules", {}).items():
        schedules.setdefault(k, v)
    return len(data.get("programs", {})) + len(data.get("schedules", {}))


def save(p: Path | None = None) -> None:
    """Merge this process's kernels into the file `p` (default: path()); written to a temp
    file, then renamed, so a reader never sees half a file."""
    p = p or path()
    if p is None:
        return
    programs, schedules = _caches()
    data = _read(p)
    old = sum(len(data.get(k, {})) for k in ("programs", "schedules"))
    data = {"programs": {**data.get("programs", {}), **programs},
            "schedules": {**data.get("schedules", {}), **schedules}}
    if sum(len(v) for v in data.values()) == old:
        return  # nothing new
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    try:
        blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # keep what pickles (an exotic kernel may not)
        data = {name: {k: v for k, v in d.items() if _picklable(v)} for name, d in data.items()}
        blob = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, p)
    except OSError:  # e.g. a read-only home: training goes on, the next run regenerates
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _picklable(v) -> bool:
    try:
        pickle.dumps(v)
        return True
    except Exception:
        return False


def stable_call_names() -> None:
    """tinygrad 0.14 names a custom backward in a graph's content hash by its id(), which is new
    in every process, so graphs using tinyar.kernels' backwards never matched the schedules
    saved here (a second run's first step took 14 s instead of 3). Name ours by their import
    path instead; every other backward keeps tinygrad's own naming. Idempotent."""
    from tinygrad.uop.ops import CallInfo

    from tinyar.kernels import CUSTOM_BACKWARDS
    if getattr(CallInfo.__repr__, "_tinyar", False):
        return
    original = CallInfo.__repr__

    def __repr__(self) -> str:
        if self.grad_fxn in CUSTOM_BACKWARDS:
            name = CUSTOM_BACKWARDS[self.grad_fxn]
            return f"CallInfo({name}, {self.name!r}, {self.precompile}, {self.precompile_backward})"
        return original(self)
    __repr__._tinyar = True
    CallInfo.__repr__ = __repr__


def enable() -> None:
    """Load the file now and save new kernels at exit. Idempotent."""
    global _enabled
    if _enabled or path() is None:
        return
    _enabled = True
    stable_call_names()
    load()
    atexit.register(save, path())
