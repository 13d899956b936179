"""Grading a submission: every task's check runs in its own Python process, in a fresh
temporary folder, with its output thrown away and a time limit, so a file that crashes,
loops or prints a lot fails only that task, and nothing is written next to the library.

    grade([Path("hw1/tasks.py")])      # parent side: one process per task -> results
    python -m tinyar.assignments.grade TASK PATH RESULT.json SEED    # child side (PATH '-': the reference)
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from tinyar.assignments.calls import local
from tinyar.assignments.tasks import BY_ID, TASKS, reference_functions

PASSED, FAILED, TODO = "passed", "failed", "not implemented"
LIBRARY_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the tinyar package
RUNNING: set[subprocess.Popen] = set()                  # so Ctrl-C can stop every grading process
RUNNING_LOCK = threading.Lock()


# ── child side: load the file, run one check ─────────────────────────────────────────────

def load_functions(path: Path | None) -> dict:
    """The graded functions a submission defines (path None: the library's reference)."""
    if path is None:
        return reference_functions()
    sys.path.insert(0, str(path.parent))            # helpers next to the file may be imported
    spec = importlib.util.spec_from_file_location("tinyar_submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [name for t in TASKS for name in t.functions]
    return {n: fn for n in names if callable(fn := getattr(module, n, None))}


def describe(e: BaseException, path: Path | None) -> str:
    """'TypeError: message (tasks.py line 12)': the exception's first line and where in the
    submission it happened."""
    if isinstance(e, SyntaxError) and e.lineno:
        return f"{type(e).__name__}: {e.msg} ({Path(e.filename or '?').name} line {e.lineno})"
    lines = str(e).strip().splitlines()
    msg = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    where = [f for f in traceback.extract_tb(e.__traceback__) if path is not None and Path(f.filename) == path]
    return msg + (f" ({path.name} line {where[-1].lineno})" if where else "")


def run_task(task_id: str, path: Path | None, seed: int = 0) -> dict:
    """Run one task's check in this process. -> {"status", "reason"}"""
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


def child_main(task_id: str, path: str, result: str, seed: str) -> None:
    sys.dont_write_bytecode = True
    quiet = os.open(os.devnull, os.O_WRONLY)          # a chatty submission can't flood anything
    os.dup2(quiet, 1), os.dup2(quiet, 2)
    out = run_task(task_id, None if path == "-" else Path(path).resolve(), int(seed))
    Path(result).write_text(json.dumps(out))


# ── parent side: one process per task ────────────────────────────────────────────────────

def stop(proc: subprocess.Popen) -> None:
    """Kill a grading process and everything it started (it leads its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL) if os.name == "posix" else proc.kill()
    except (ProcessLookupError, PermissionError):
        pass

def exit_reason(code: int, err: str) -> str:
    if code < 0:
        try:
            return f"the process was killed by {signal.Signals(-code).name} (a crash?)"
        except ValueError:
            return f"the process was killed by signal {-code}"
    last = [l for l in err.strip().splitlines() if l.strip()]
    return f"the process exited with code {code} before finishing" + (f": {last[-1][:200]}" if last else "")


def grade_task(task_id: str, path: Path | None, timeout: float = 120.0, seed: int = 0) -> dict:
    """Run one task's check in a fresh process. -> {"task", "status", "points", "max_points", "reason", "seconds"}"""
    task, t0 = BY_ID[task_id], time.perf_counter()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(LIBRARY_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory(prefix="tinyar-grade-") as tmp:
        result, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, "-m", "tinyar.assignments.grade", task_id, "-" if path is None else str(path.resolve()),
               str(result), str(seed)]
        with open(err, "w") as err_file:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err_file, start_new_session=os.name == "posix")
            with RUNNING_LOCK:
                RUNNING.add(proc)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop(proc)                  # the whole group: a hung task's own children too
                proc.wait()
                code = None
            finally:
                with RUNNING_LOCK:
                    RUNNING.discard(proc)
        if code is None:
            out = {"status": FAILED, "reason": f"stopped at the {timeout:g} s time limit (an endless loop?)"}
        elif result.exists():
            out = json.loads(result.read_text())
        else:
            out = {"status": FAILED, "reason": exit_reason(code, err.read_text(errors="replace")[-2000:])}
    points = task.points if out["status"] == PASSED else 0
    return {"task": task_id, "status": out["status"], "points": points, "max_points": task.points,
            "reason": out["reason"], "seconds": round(time.perf_counter() - t0, 1)}


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
    """Grade each submission (None = the library's reference) on each task, `jobs` processes
    at a time. -> one dict per submission: {"submission", "score", "max_score", "tasks": [...]}"""
    ids = tasks or [t.id for t in TASKS]
    work = [(p, t) for p in paths for t in ids]

    def one(item):
        r = grade_task(item[1], item[0], timeout, seed)
        if on_result:
            on_result(item[0], r)
        return r

    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        results = list(pool.map(one, work))
    except BaseException:               # Ctrl-C: stop every grading process, then give up
        pool.shutdown(wait=False, cancel_futures=True)
        with RUNNING_LOCK:
            for proc in RUNNING:
                stop(proc)
        raise
    finally:
        pool.shutdown()
    out = []
    for i, p in enumerate(paths):
        rs = results[i * len(ids):(i + 1) * len(ids)]
        out.append({"submission": "reference" if p is None else str(p), "score": sum(r["points"] for r in rs),
                    "max_score": sum(r["max_points"] for r in rs), "tasks": rs})
    return out


if __name__ == "__main__":
    child_main(*sys.argv[1:5])
