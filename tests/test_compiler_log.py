"""tinyar/compiler_log.py: what compilers write to fd 2 goes to the log, not the terminal, and
comes back to the terminal only when an error escapes.

Each case runs a small script in a subprocess, because the thing under test rewires the
process's own file descriptor 2 (pytest's capture would otherwise sit in between)."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = "import os, subprocess, sys\nfrom tinyar.compiler_log import CompilerLog, until_exit\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_fd2_and_child_processes_go_to_the_log_python_stderr_stays(tmp_path):
    res = run("""
        with CompilerLog("logs/c.log"):
            os.write(2, b"native chatter\\n")                       # what PoCL does in-process
            subprocess.run([sys.executable, "-c", "import os; os.write(2, b'child chatter\\\\n')"])  # clang
            print("python warning", file=sys.stderr)              # Python's own stderr still shows
        os.write(2, b"after the block\\n")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    log = (tmp_path / "logs" / "c.log").read_text()
    assert "native chatter" in log and "child chatter" in log and "python warning" not in log
    assert "chatter" not in res.stderr
    assert "python warning" in res.stderr and "after the block" in res.stderr


def test_an_error_replays_the_log_and_the_log_is_kept(tmp_path):
    res = run("""
        try:
            with CompilerLog("c.log"):
                os.write(2, b"error: the reason it failed\\n")
                raise RuntimeError("compile failed")
        except RuntimeError:
            pass
        with CompilerLog("c.log"):                                # a fresh log: the old text is gone
            os.write(2, b"quiet warning\\n")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "error: the reason it failed" in res.stderr and "compiler output" in res.stderr
    assert "quiet warning" not in res.stderr
    assert (tmp_path / "c.log").read_text() == "quiet warning\n"


def test_append_keeps_old_text_and_replays_only_the_new(tmp_path):
    (tmp_path / "c.log").write_text("from an earlier run\n")
    res = run("""
        with CompilerLog("c.log", append=True) as log:
            os.write(2, b"new text\\n")
            assert log.text() == "new text\\n", log.text()
        try:
            with CompilerLog("c.log", append=True):
                os.write(2, b"newest\\n")
                raise ValueError("x")
        except ValueError:
            pass
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c.log").read_text() == "from an earlier run\nnew text\nnewest\n"
    assert "newest" in res.stderr and "new text" not in res.stderr and "earlier" not in res.stderr


def test_system_exit_is_not_replayed(tmp_path):
    res = run("""
        with CompilerLog("c.log"):
            os.write(2, b"chatter\\n")
            sys.exit("a lesson check failed")
    """, tmp_path)
    assert res.returncode == 1
    assert "a lesson check failed" in res.stderr and "chatter" not in res.stderr


def test_until_exit_replays_before_the_traceback(tmp_path):
    res = run("""
        until_exit("c.log")
        os.write(2, b"chatter\\n")
        print("still shown", file=sys.stderr)
        raise RuntimeError("boom")
    """, tmp_path)
    assert res.returncode == 1
    assert res.stderr.index("still shown") < res.stderr.index("chatter") < res.stderr.index("RuntimeError: boom")
    ok = run("""
        until_exit("d.log")
        os.write(2, b"chatter\\n")
        print("done")
    """, tmp_path)
    assert ok.returncode == 0 and ok.stdout == "done\n" and ok.stderr == ""
    assert (tmp_path / "d.log").read_text() == "chatter\n"


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_a_real_clang_warning_lands_in_the_log(tmp_path):
    res = run("""
        with CompilerLog("c.log"):
            subprocess.run(["clang", "-x", "c", "-c", "-", "-o", os.devnull], input=b"int f(void) {}")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert "1 warning generated." in (tmp_path / "c.log").read_text()
