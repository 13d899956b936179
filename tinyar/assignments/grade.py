"""Grading: the checks run here, in the grading process; the submission runs in a child.

The child (sandbox.py) imports the student's file and calls its functions on request; this
process sends the inputs, reads back plain numbers and decides. Nothing the submission
does can write a verdict: there is no result file, and a child that sends garbage, dies or
overruns the time limit fails that task. Where `unshare` works (Linux, as root) the child
runs in its own PID, mount and network namespaces with every file system read-only except a
scratch tmpfs and no capabilities, so it can't write into the library or other submissions,
and killing it at the time limit kills everything it started, `setsid` children included.
Elsewhere it runs in its own session, and a submission that changed the library scores 0. Either way its memory is limited and its prints go nowhere.

    grade([Path("hw1/tasks.py")])        # -> one dict per submission
"""
from __future__ import annotations

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
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from tinyar.assignments.calls import StudentError, decode_out, encode_args, local
from tinyar.assignments.sandbox import SETUP, describe, load_functions
from tinyar.assignments.tasks import ASSIGNMENTS, BY_ID, assignment_of

PASSED, FAILED, TODO = "passed", "failed", "not implemented"
LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the tinyar package
MEMORY_LIMIT = 4 << 30                              # bytes of address space a submission may use
RUNNING: set[subprocess.Popen] = set()              # so Ctrl-C can stop every grading process
RUNNING_LOCK = threading.Lock()


class ChildGone(Exception):
    """The child died, overran the time limit or sent something that isn't an answer."""


# ── in this process (pytest, tests): the checks call the functions directly ──────────────

def run_task(task_id: str, path: Path | None, seed: int = 0) -> dict:
    """Run one task's check in this process (no isolation). -> {"status", "reason"}"""
    from tinyar.assignments.checks import Failed, run_check
    try:
        fns = load_functions(path)
    except BaseException as e:  # noqa: BLE001 — anything a student file does on import
        return {"status": FAILED, "reason": f"the file does not load: {describe(e, path)}"}
    if missing := [n for n in BY_ID[task_id].functions if n not in fns]:
        return {"status": TODO, "reason": f"no function {missing[0]} in {path.name}"}
    try:
        run_check(task_id, local(fns), seed)
    except NotImplementedError as e:
        return {"status": TODO, "reason": str(e).strip().splitlines()[0] if str(e).strip() else "NotImplementedError"}
    except Failed as e:
        return {"status": FAILED, "reason": str(e)}
    except BaseException as e:  # noqa: BLE001 — a crash in the student's code fails the task
        return {"status": FAILED, "reason": describe(e, path)}
    return {"status": PASSED, "reason": ""}


# ── the child: started, asked, stopped ───────────────────────────────────────────────────

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
    try:
        from tinygrad.helpers import CACHEDB
        import sqlite3
        if not os.path.exists(CACHEDB) or os.path.getsize(CACHEDB) > 256 << 20:
            return None
        dst = Path(tempfile.mkdtemp(prefix="tinyar-grade-cache-")) / "cache.db"
        with sqlite3.connect(CACHEDB, timeout=10) as src, sqlite3.connect(dst) as out:
            src.backup(out)
        dst.chmod(0o444)
        return str(dst)
    except Exception:  # noqa: BLE001 — no cache only makes the first compiles slower
        return None


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

    def __init__(self, path: Path | None):
        self.path, self.buf, self.tmp = path, b"", tempfile.TemporaryDirectory(prefix="tinyar-grade-")
        work, err = Path(self.tmp.name) / "work", Path(self.tmp.name) / "stderr.txt"
        work.mkdir()
        cmd = [sys.executable, "-m", "tinyar.assignments.sandbox", "-" if path is None else str(path.resolve())]
        if sandbox_works():
            cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net", "--",
                   "/bin/sh", "-c", SETUP, "sh", str(work), *cmd]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TINYAR_GRADE_MEMORY": str(MEMORY_LIMIT),
               "CACHEDB": str(work / "tinygrad-cache.db"), "TINYAR_GRADE_CACHE": cache_snapshot() or "",
               "TMPDIR": str(work), "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT),
                                                                   *filter(None, [os.environ.get("PYTHONPATH")])])}
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
            why = f"stopped at the {timeout:g} s time limit (an endless loop?)"
        elif why == "exited":
            err = (Path(self.tmp.name) / "stderr.txt").read_text(errors="replace")[-2000:]
            why = exit_reason(self.proc.returncode, err)
        self.tmp.cleanup()
        return why


# ── one submission: every task, the checks here, the functions there ───────────────────

def library_files() -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((LIBRARY_ROOT / "tinyar").rglob("*.py"))}


def grade_submission(path: Path | None, ids: list[str], timeout: float, seed: int,
                     on_result: Callable[[Path | None, dict], None] | None = None) -> list[dict]:
    from tinyar.assignments.checks import Failed, run_check
    before, child, results = None if sandbox_works() else library_files(), None, []
    for task_id in ids:
        task, t0 = BY_ID[task_id], time.perf_counter()
        deadline = time.monotonic() + timeout
        try:
            if child is None:
                child = Child(path)
                child.hello = child.receive(deadline)   # {"ready": [names]} or {"load_error": why}
            if "load_error" in child.hello:
                out = {"status": FAILED, "reason": f"the file does not load: {str(child.hello['load_error'])[:300]}"}
            elif missing := [n for n in task.functions if n not in child.hello.get("ready", [])]:
                out = {"status": TODO, "reason": f"no function {missing[0]} in {path.name if path else 'the library'}"}
            else:
                run_check(task_id, {n: (lambda n: lambda *a: child.call(n, a, deadline))(n) for n in task.functions},
                          seed)
                out = {"status": PASSED, "reason": ""}
        except StudentError as e:
            where = f" ({path.name} line {e.line})" if e.line and path else ""
            out = ({"status": TODO, "reason": e.message or "NotImplementedError"} if e.kind == "NotImplementedError"
                   else {"status": FAILED, "reason": f"{e.kind}: {e.message}{where}" if e.message else e.kind + where})
        except Failed as e:
            out = {"status": FAILED, "reason": str(e)}
        except ChildGone as e:
            out, child = {"status": FAILED, "reason": child.close(str(e), timeout)}, None
        r = {"task": task_id, "status": out["status"], "points": task.points if out["status"] == PASSED else 0,
             "max_points": task.points, "reason": out["reason"], "seconds": round(time.perf_counter() - t0, 1)}
        results.append(r)
        if on_result:
            on_result(path, r)
    if child is not None:
        child.close()
    if before is not None and (after := library_files()) != before:   # possible only without the sandbox
        changed = sorted(str(p.relative_to(LIBRARY_ROOT)) for p in before.keys() ^ after.keys() |
                         {p for p in before.keys() & after.keys() if before[p] != after[p]})
        for r in results:   # not undone: the change may be someone's edit; say where to look
            r.update(status=FAILED, points=0, reason=f"the library changed while this submission ran "
                     f"({', '.join(changed[:3])}): check it (git diff) before grading on")
    return results


def find_submissions(path: Path) -> list[Path]:
    """A .py file is one submission; a folder holding tasks.py is one (a workspace); any other
    folder holds many: its .py files and its subfolders that hold a tasks.py."""
    if path.is_file():
        return [path]
    if (path / "tasks.py").is_file():
        return [path / "tasks.py"]
    return sorted([p for p in path.glob("*.py") if not p.name.startswith("_")] +
                  [p / "tasks.py" for p in path.iterdir() if (p / "tasks.py").is_file()])


def grade(paths: list[Path | None], tasks: list[str] | None = None, timeout: float = 120.0, jobs: int = 1,
          seed: int = 0, on_result: Callable[[Path | None, dict], None] | None = None) -> list[dict]:
    """Grade each submission (None = the library's reference) on each task, `jobs`
    submissions at a time. -> one dict per submission: {"submission", "score", "max_score", "tasks"}"""
    def ids(path: Path | None) -> list[str]:   # the tasks asked for, else those of the file's assignment
        which = assignment_of(path)
        return tasks or [t.id for a, ts in ASSIGNMENTS.items() if which in (None, a) for t in ts]

    if not sandbox_works():
        print("note: grading without a sandbox (it needs Linux, root and util-linux's unshare): a submission can "
              "do what your account can; one that changes the library scores 0", file=sys.stderr)
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        per_sub = list(pool.map(lambda p: grade_submission(p, ids(p), timeout, seed, on_result), paths))
    except BaseException:               # Ctrl-C: stop every grading process, then give up
        pool.shutdown(wait=False, cancel_futures=True)
        with RUNNING_LOCK:
            for proc in RUNNING:
                stop(proc)
        raise
    finally:
        pool.shutdown()
    return [{"submission": "reference" if p is None else str(p), "score": sum(r["points"] for r in rs),
             "max_score": sum(r["max_points"] for r in rs), "tasks": rs} for p, rs in zip(paths, per_sub)]
