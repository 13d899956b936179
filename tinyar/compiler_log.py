"""Compiler chatter kept in a log file, shown only when something goes wrong.

tinygrad compiles kernels as it meets them: on DEV=CPU it runs clang as a child process, on
DEV=CL PoCL runs clang inside this process. Both write to the process's file descriptor 2
("1 warning generated.") no matter what sys.stderr is, so the only way to keep that out of a
user's terminal is to point descriptor 2 itself at a file while tinygrad works:

    with CompilerLog(run_dir / "compiler.log"):
        train(...)          # clang's and PoCL's messages go to the file

Python's own sys.stderr keeps writing to the terminal meanwhile (it gets its own copy of the
old descriptor), so warnings and tracebacks from Python still show. If an exception escapes,
what the compilers wrote during the block is copied to the terminal before the exception
propagates: the log may hold the reason. The file is kept either way.
"""
from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

STDERR = 2


class CompilerLog:
    """Redirect file descriptor 2 to `path` between start() and stop() (or as a `with` block).

    append=True adds to an existing log (a resumed run) instead of starting it afresh.
    replay_on: the exceptions for which the log's new text is copied to the real stderr
    (SystemExit and KeyboardInterrupt are not errors of the compiler: not replayed)."""

    def __init__(self, path: str | os.PathLike, append: bool = False, replay_on: tuple = (Exception,)):
        self.path, self.append, self.replay_on = Path(path), append, replay_on
        self.saved_fd: int | None = None

    def start(self) -> "CompilerLog":
        if self.saved_fd is not None:
            raise RuntimeError("this CompilerLog is already started")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _flush_python_streams()
        self.saved_fd = os.dup(STDERR)                      # the terminal (or whatever fd 2 was)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self.append else os.O_TRUNC)
        log_fd = os.open(self.path, flags, 0o644)
        self.offset = os.lseek(log_fd, 0, os.SEEK_END)      # where this block's text begins
        os.dup2(log_fd, STDERR)
        os.close(log_fd)
        # Python's stderr, if it wrote to fd 2, now writes to a copy of the old fd 2 instead
        self.python_stderr = sys.stderr
        if _fileno(sys.stderr) == STDERR:
            sys.stderr = open(os.dup(self.saved_fd), "w", buffering=1, encoding=sys.stderr.encoding,
                              errors="backslashreplace")
        return self

    def stop(self, error: BaseException | None = None) -> None:
        """Point fd 2 back where it was. With an error of a replay_on kind, copy the log's text
        from this block to the restored stderr."""
        if self.saved_fd is None:
            return
        _flush_python_streams()
        os.dup2(self.saved_fd, STDERR)
        os.close(self.saved_fd)
        self.saved_fd = None
        if sys.stderr is not self.python_stderr:
            sys.stderr.close()
            sys.stderr = self.python_stderr
        if error is not None and isinstance(error, self.replay_on):
            text = self.text()
            if text:
                sys.stderr.write(f"--- compiler output (kept in {self.path}) ---\n{text}"
                                 f"{'' if text.endswith(chr(10)) else chr(10)}--- end of compiler output ---\n")
                sys.stderr.flush()

    def text(self) -> str:
        """What was written to fd 2 since start() (the log may hold older runs before it)."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", errors="replace")

    def __enter__(self) -> "CompilerLog":
        return self.start()

    def __exit__(self, kind, error, tb) -> None:
        self.stop(error)


def until_exit(path: str | os.PathLike, **options) -> CompilerLog:
    """A CompilerLog for the rest of the program (a script, a lesson), for code that can't sit
    in a `with` block: stopped at exit; an uncaught exception replays it before its traceback."""
    log, hook = CompilerLog(path, **options).start(), sys.excepthook

    def on_uncaught(kind, error, tb):
        log.stop(error)
        hook(kind, error, tb)

    sys.excepthook = on_uncaught
    atexit.register(log.stop)
    return log


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None   # e.g. pytest's capture, a StringIO: it does not write to fd 2


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
