"""Grading: the checks run here, in the grading process; the submission runs in a child.

The child (sandbox.py) imports the student's file and calls its functions on request; this
process sends the inputs, reads back plain numbers and decides. Nothing the submission
does can write a verdict: there is no result file, and a child that sends garbage, dies or
overruns the time limit fails that task. Where `unshare` works (Linux, as root) the child
runs in its own PID, mount and network namespaces with every file system read-only except a
scratch tmpfs and no capabilities, so it can't write into the library or other submissions,
and killing it at the time limit kills everything it started, `setsid` children included.
Elsewhere it runs in its own session, and a submission that changed the library scores 0.
Either way its memory is limited and its prints go nowhere (child.py, sandbox.py).

    grade([Path("hw1/tasks.py")])        # -> one dict per submission
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from tinyar.assignments.calls import StudentError, local
from tinyar.assignments.child import (LIBRARY_ROOT, RUNNING, RUNNING_LOCK, Child, ChildGone, sandbox_works, stop,
                                     warm_kernels)
from tinyar.assignments.sandbox import describe, load_functions
from tinyar.assignments.tasks import ASSIGNMENTS, BY_ID, assignment_of

PASSED, FAILED, TODO = "passed", "failed", "not implemented"


# ── in this process (pytest, tests): the checks call the functions directly ──────────────

def run_task(task_id: str, path: Path | None, seed: int = 0) -> dict:
    """Run one task's check in this process (no isolation). -> {"status", "reason"}"""
    from tinyar.assignments.checks import Failed, run_check
    try:
        fns = load_functions(path)
    except BaseException as e:  # noqa: BLE001 — anything a student file does on import
        return {"status": FAILED, "reason": f"the file does not load: {describe(e, path)}"}
    if missing := [n for n in BY_ID[task_id].functions + BY_ID[task_id].uses if n not in fns]:
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


# ── one submission: every task, the checks here, the functions there ───────────────────

def library_files(warm: dict[str, str] | None = None) -> dict[Path, bytes]:
    """The library's files and the shared kernel files (what an unsandboxed submission could change)."""
    shared = [Path(f) for f in (warm or {}).values() if f and Path(f).is_file()]
    return {p: p.read_bytes() for p in sorted((LIBRARY_ROOT / "tinyar").rglob("*.py")) + shared}


def grade_submission(path: Path | None, ids: list[str], timeout: float, seed: int,
                     on_result: Callable[[Path | None, dict], None] | None = None,
                     warm: dict[str, str] | None = None) -> list[dict]:
    from tinyar.assignments.checks import Failed, run_check
    sandboxed = sandbox_works()
    before, child, results = None if sandboxed else library_files(warm), None, []
    for task_id in ids:
        task, t0 = BY_ID[task_id], time.perf_counter()
        deadline = time.monotonic() + timeout
        try:
            if child is None:
                child = Child(path, sandboxed, warm)
                child.hello = child.receive(deadline)   # {"ready": [names]} or {"load_error": why}
            if "load_error" in child.hello:
                out = {"status": FAILED, "reason": f"the file does not load: {str(child.hello['load_error'])[:300]}"}
            elif missing := [n for n in task.functions + task.uses if n not in child.hello.get("ready", [])]:
                out = {"status": TODO, "reason": f"no function {missing[0]} in {path.name if path else 'the library'}"}
            else:
                run_check(task_id, {n: (lambda n: lambda *a: child.call(n, a, deadline))(n)
                                    for n in task.functions + task.uses}, seed)
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
    if before is not None and (after := library_files(warm)) != before:   # possible only without the sandbox
        rel = lambda p: str(p.relative_to(LIBRARY_ROOT)) if p.is_relative_to(LIBRARY_ROOT) else str(p)
        changed = sorted(rel(p) for p in before.keys() ^ after.keys() |
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
    todo = [ids(p) for p in paths]      # here, not in the threads: ast.parse isn't thread-safe in Python 3.11
    # a class: the reference's kernels first, generated once for every child (child.warm_kernels)
    warm = warm_kernels(sorted({t for ts in todo for t in ts}), seed, 10 * timeout) if len(paths) > 1 else {}
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        per_sub = list(pool.map(lambda p, ts: grade_submission(p, ts, timeout, seed, on_result, warm), paths, todo))
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
