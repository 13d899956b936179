"""The child side of grading: load one submission, then run its functions on request.

    python -m tinyar.assignments.sandbox PATH      # PATH '-': the library's reference

It reads one JSON request per line on stdin ({"call": name, "args": [...]}) and answers one
JSON line: {"out": ...} or {"error": ...}. It never decides anything: the grading process
compares what comes back with the oracles. Before the submission is imported this process
limits its own memory, keeps private copies of its pipes and sends the submission's prints
to /dev/null. grade.py starts it inside `unshare` (its own PID, mount and network
namespaces, every file system read-only but a scratch tmpfs, no capabilities) when it can.
"""
from __future__ import annotations

import importlib.util
import json
import os
import resource
import shutil
import sys
import traceback
from pathlib import Path

SETUP = r"""set -e
w=$1; shift
mount -t tmpfs -o size=512m,mode=1777 tmpfs "$w"
awk '{print $2}' /proc/self/mounts | sort -u | while read -r m; do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$w") continue;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || echo "cannot make $m read-only" >&2
done
cd "$w"
setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"
"""   # sh stays PID 1 of the new namespaces (a PID 1 ignores its own SIGSEGV); the submission
      # runs in its child, without root's powers; sh exits with its status (128+N: signal N)


def load_functions(path: Path | None) -> dict:
    """The graded functions a submission defines (path None: the library's reference)."""
    from tinyar.assignments.tasks import BY_ID, reference_functions
    if path is None:
        return reference_functions()
    sys.path.insert(0, str(path.parent))            # helpers next to the file may be imported
    spec = importlib.util.spec_from_file_location("tinyar_submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = [name for t in BY_ID.values() for name in t.functions]
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


def main(path_arg: str) -> None:
    sys.dont_write_bytecode = True
    requests, replies = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    quiet = os.open(os.devnull, os.O_RDWR)            # a chatty submission can't flood anything
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)
    if limit := int(os.environ.get("TINYAR_GRADE_MEMORY", "0")):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))   # hard too: the submission can't raise it
    if (cache := os.environ.get("TINYAR_GRADE_CACHE")) and os.path.exists(cache):   # tinygrad's compile cache:
        shutil.copyfile(cache, os.environ["CACHEDB"])  # a private copy, so nothing a submission writes is shared
    if (kernels := os.environ.get("TINYAR_GRADE_KERNELS")) and os.path.exists(kernels):   # the reference's kernels
        from tinyar import kernel_cache                # (warm.py), read before any student code runs
        kernel_cache.load(Path(kernels))
    from tinyar.assignments.calls import decode_args, encode_out, invoke

    def send(msg: dict) -> None:
        replies.write(json.dumps(msg).encode() + b"\n")
        replies.flush()

    path = None if path_arg == "-" else Path(path_arg)
    try:
        fns = load_functions(path)
    except BaseException as e:  # noqa: BLE001 — anything a student file does on import
        send({"load_error": describe(e, path)})
        return
    send({"ready": sorted(fns)})
    for line in requests:
        req = json.loads(line)
        args = decode_args(req["args"])
        try:
            out = invoke(fns[req["call"]], args)
        except BaseException as e:  # noqa: BLE001 — a crash in the student's code is an answer too
            msg = str(e).strip().splitlines()
            where = [f for f in traceback.extract_tb(e.__traceback__) if path is not None and Path(f.filename) == path]
            send({"error": {"kind": type(e).__name__, "message": msg[0] if msg else "",
                            "line": where[-1].lineno if where else None}})
            continue
        rngs = [a.bit_generator.state for a in args if hasattr(a, "bit_generator")]
        send({"out": encode_out(out), "rngs": rngs})


if __name__ == "__main__":
    main(sys.argv[1])
