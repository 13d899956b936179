"""The grading process's handle on a submission's child process (sandbox.py runs inside it).

Started in fresh namespaces where `unshare` works (Linux, as root), asked one call at a
time with a deadline, and stopped with everything it started.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

from tinyar.assignments.calls import StudentError, decode_out, encode_args
from tinyar.assignments.sandbox import SETUP

LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the tinyar package
MEMORY_LIMIT = 4 << 30                              # bytes of address space a submission may use
RUNNING: set[subprocess.Popen] = set()              # so Ctrl-C can stop every grading process
RUNNING_LOCK = threading.Lock()


class ChildGone(Exception):
    """The child died, overran the time limit or sent something that isn't an answer."""


@lru_cache(maxsize=1)
def sandbox_works() -> bool:
    """Can this machine run a child in fresh namespaces (root, util-linux unshare, setpriv)?"""
    if os.name != "posix" or not shutil.which("unshare") or not shutil.which("setpriv"):
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="tinyar-probe-") as tmp:
            r = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net",
                                "--", "/bin/sh", "-c", SETUP, "sh", tmp, "/bin/sh", "-c",
                                f"! touch {LIBRARY_ROOT}/.probe"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        (LIBRARY_ROOT / ".probe").unlink(missing_ok=True)   # there only if the file system stayed writable
    return r.returncode == 0


@lru_cache(maxsize=1)
def cache_snapshot() -> str | None:
    """A consistent copy of tinygrad's compile cache for the children to start from (each
    child works on its own copy, so no submission can plant a kernel for the next one)."""
    from tinygrad.helpers import CACHEDB
    return sqlite_snapshot(CACHEDB)


def sqlite_snapshot(db: str) -> str | None:
    """A consistent read-only copy of a sqlite file (its WAL included) in a fresh folder."""
    try:
        import sqlite3
        if not os.path.exists(db) or os.path.getsize(db) > 256 << 20:
            return None
        folder = tempfile.mkdtemp(prefix="tinyar-grade-cache-")
        atexit.register(shutil.rmtree, folder, True)
        dst = Path(folder) / "cache.db"
        with sqlite3.connect(db, timeout=10) as src, sqlite3.connect(dst) as out:
            src.backup(out)
        dst.chmod(0o444)
        return str(dst)
    except Exception:  # noqa: BLE001 — no cache only makes the first compiles slower
        return None


def warm_kernels(ids: list[str], seed: int, timeout: float) -> dict[str, str]:
    """Generate the kernels of the library's answers to these tasks once, in a process that
    loads no submission (warm.py). -> the environment that hands them, read-only, to every
    child ({} if that failed: the children then generate everything themselves)."""
    folder = Path(tempfile.mkdtemp(prefix="tinyar-grade-warm-"))
    atexit.register(shutil.rmtree, folder, True)
    env = {**os.environ, "CACHEDB": str(folder / "compiled.db"), "TINYAR_KERNEL_CACHE": "0",
           "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    try:
        subprocess.run([sys.executable, "-m", "tinyar.assignments.warm", str(folder), str(seed), *ids], env=env,
                       cwd=folder, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return {}
    kernels, compiled = folder / "kernels.pkl", sqlite_snapshot(str(folder / "compiled.db"))
    if not kernels.exists() or compiled is None:
        return {}
    kernels.chmod(0o444)
    return {"TINYAR_GRADE_KERNELS": str(kernels), "TINYAR_GRADE_CACHE": compiled}


def stop(proc: subprocess.Popen) -> None:
    """Kill a child and everything it started (its process group; its whole PID namespace
    when sandboxed, since the namespace dies with its first process)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL) if os.name == "posix" else proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def exit_reason(code: int, err: str) -> str:
    if code < 0 or code > 128 and code - 128 in {s.value for s in signal.Signals}:   # unshare reports 128+N
        n = -code if code < 0 else code - 128
        try:
            return f"the process was killed by {signal.Signals(n).name} (a crash?)"
        except ValueError:
            return f"the process was killed by signal {n}"
    last = [l for l in err.strip().splitlines() if l.strip()]
    return f"the process exited with code {code} before finishing" + (f": {last[-1][:200]}" if last else "")


class Child:
    """One submission's child process, answering calls until it is closed or killed."""

    def __init__(self, path: Path | None, sandboxed: bool = True, warm: dict[str, str] | None = None):
        self.path, self.buf, self.tmp = path, b"", tempfile.TemporaryDirectory(prefix="tinyar-grade-")
        work, err = Path(self.tmp.name) / "work", Path(self.tmp.name) / "stderr.txt"
        work.mkdir()
        cmd = [sys.executable, "-m", "tinyar.assignments.sandbox", "-" if path is None else str(path.resolve())]
        if sandboxed:
            cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net", "--",
                   "/bin/sh", "-c", SETUP, "sh", str(work), *cmd]
        warm = warm or {}    # warm_kernels(): the reference's kernels and compiled programs, read-only
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TINYAR_GRADE_MEMORY": str(MEMORY_LIMIT),
               "CACHEDB": str(work / "tinygrad-cache.db"),
               "TINYAR_GRADE_CACHE": warm.get("TINYAR_GRADE_CACHE") or cache_snapshot() or "",
               "TMPDIR": str(work), "HOME": str(work), "XDG_CACHE_HOME": str(work / ".cache"),
               "POCL_CACHE_DIR": str(work / "pocl"),     # everything else is read-only in the sandbox
               "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT),
                                                                   *filter(None, [os.environ.get("PYTHONPATH")])]),
               "TINYAR_GRADE_KERNELS": warm.get("TINYAR_GRADE_KERNELS", "")}
        self.err = open(err, "w")
        self.proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, start_new_session=os.name == "posix")
        with RUNNING_LOCK:
            RUNNING.add(self.proc)
        self.hello: dict = {}

    def receive(self, deadline: float) -> dict:
        """The child's next JSON line, or ChildGone (died, time limit, garbage)."""
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise ChildGone("time limit")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise ChildGone("exited")
            self.buf += chunk
            if len(self.buf) > 256 << 20:
                raise ChildGone("the submission sent more than 256 MB instead of an answer")
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
            assert isinstance(msg, dict)
            return msg
        except (ValueError, AssertionError):
            raise ChildGone("the grading channel was written to by the submission") from None

    def call(self, name: str, args: tuple, deadline: float):
        try:
            self.proc.stdin.write(json.dumps({"call": name, "args": encode_args(list(args))}).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChildGone("exited") from None
        msg = self.receive(deadline)
        try:
            if "error" in msg:
                e = msg["error"]
                raise StudentError(str(e["kind"])[:80], str(e["message"])[:300], e["line"] if isinstance(e["line"], int) else None)
            out = decode_out(msg["out"])
            for rng, state in zip([a for a in args if isinstance(a, np.random.Generator)], msg["rngs"]):
                rng.bit_generator.state = state        # the student's draws moved it on
            return out
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ChildGone("the grading channel was written to by the submission") from None

    def close(self, why: str = "", timeout: float = 0.0) -> str:
        """Stop the child and everything it started, remove its scratch folder; -> why it is
        gone, in words (why: what receive() saw)."""
        stop(self.proc)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with RUNNING_LOCK:
            RUNNING.discard(self.proc)
        self.err.close()
        if why == "time limit":
            why = f"stopped at the {timeout:g} s time limit (an endless loop? a slow or busy machine may need more: --timeout {2 * timeout:g})"
        elif why == "exited":
            err = (Path(self.tmp.name) / "stderr.txt").read_text(errors="replace")[-2000:]
            why = exit_reason(self.proc.returncode, err)
        self.tmp.cleanup()
        return why
