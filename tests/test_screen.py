"""The training screen (tinyar/screen.py, cli.py train): never frozen at any terminal height,
honest about compiling, no compiler lines, the z-loss column explained, lines that fit 80 columns.
Everything but the last test feeds made-up rows to the screen: nothing compiles."""
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from tests.conftest import TEXT, TINY_FLAGS
from tinyar.config import Config
from tinyar.screen import StatusColumn, TrainScreen, zloss_floor

ROOT = Path(__file__).resolve().parent.parent


def train_row(step: int) -> dict:
    return {"kind": "train", "step": step, "total": 2.5, "ce": 2.5, "zloss": 1500.0, "next_embed": 0.0,
            "grad_norm": 0.5, "lr": 1e-3, "tok_s": 1234.0}


def val_row(step: int) -> dict:
    return {"kind": "val", "step": step, "val_ce": 2.4, "val_ppl": 11.0, "val_bpb": 3.4}


def terminal(out: str, height: int) -> list[str]:
    """What a terminal of `height` lines shows after `out`: a tiny emulator of the codes Rich's
    live display writes (newline, carriage return, erase line, cursor up)."""
    lines, row, col = [""], 0, 0
    for tok in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", out):
        if tok == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif tok == "\r":
            col = 0
        elif tok == "\x1b[2K":
            lines[row] = ""
        elif m := re.fullmatch(r"\x1b\[(\d*)A", tok):
            row = max(0, row - int(m[1] or 1))
        elif tok and not tok.startswith("\x1b"):
            lines[row] = lines[row][:col].ljust(col) + tok + lines[row][col + len(tok):]
            col += len(tok)
    return lines[:row + 1][-height:]


def run_screen(console: Console, cfg: Config, upto: int, check=None) -> None:
    with TrainScreen(console, cfg, 0) as screen:
        for step in range(cfg.log_every, upto + 1, cfg.log_every):
            screen.row(train_row(step))
            if step % cfg.eval_every == 0:
                screen.row(val_row(step))
            if check:
                check(step)


def test_a_run_longer_than_the_terminal_keeps_the_newest_rows_visible():
    # proves the screen never freezes: in a 12-line terminal, after every row of a 300-step run
    # (40 rows + 3 validations, far taller than the screen) the newest step, the newest
    # validation and the progress line are on screen (a live table taller than the terminal was
    # cut by Rich: rows and bar stuck at the screen's height)
    out, height = io.StringIO(), 12
    console = Console(file=out, width=80, height=height, force_terminal=True, color_system=None)
    cfg = Config(steps=300, log_every=10, eval_every=100)

    def check(step):
        shown = "\n".join(terminal(out.getvalue(), height))
        assert re.search(rf"^\s*{step}\s+2\.5\s", shown, re.M), (step, shown)
        assert f"{step}/300" in shown, shown
        if step >= 100:
            assert f"validation @ step {step // 100 * 100}: val ce 2.4" in shown, shown
    run_screen(console, cfg, 300, check)


def test_piped_output_is_plain_rows():
    # proves a log file gets one plain line per row: no cursor codes, no progress bar
    out = io.StringIO()
    run_screen(Console(file=out, width=80), Config(steps=30, log_every=10, eval_every=30), 30)
    text = out.getvalue()
    assert "\x1b" not in text and "━" not in text
    assert "step 20  total 2.5  ce 2.5  z-loss* 1500" in text
    assert "validation @ step 30: val ce 2.4" in text


def test_the_live_line_counts_seconds_while_compiling_and_says_what():
    # proves the first step is not a silent wait: before any row the live line says step 1 is
    # compiling and counts seconds; then tok/s; before the first validation, its compiling
    screen = TrainScreen(Console(file=io.StringIO(), force_terminal=True), Config(eval_every=100, log_every=10), 0)
    status = StatusColumn(screen)
    what, _ = screen.busy
    screen.busy = (what, time.monotonic() - 12.4)
    assert re.fullmatch(r"step 1: compiling( \(\d+ new kernels\))? · 12 s", status.render(None).plain)
    screen.row(train_row(10))
    assert status.render(None).plain == "1,234 tok/s"
    screen.row(train_row(100))
    assert status.render(None).plain.startswith("validation: compiling")
    screen.row(val_row(100))
    screen.row(train_row(200))
    assert status.render(None).plain.startswith("validating ·")
    assert TrainScreen(Console(file=io.StringIO()), Config(), 40).busy[0] == "step 41: compiling"  # resumed


def test_zloss_off_is_marked_watched_not_trained_with_its_starting_scale():
    # proves the z-loss column says whether it is trained, and the note gives the scale a fresh
    # model starts at (1,018.5 for the default config; its first logged z-loss was 1,018.53)
    out = io.StringIO()
    run_screen(Console(file=out, width=80, height=30, force_terminal=True, color_system=None), Config(), 10)
    text = " ".join(out.getvalue().split())
    assert "z-loss*" in text and "watched, not trained" in text and "--zloss 1e-4" in text
    assert "z·w" not in text and "next-emb" not in text    # columns that would only say "off"
    assert abs(zloss_floor(Config()) - 1018.53) < 0.1 and "1,019" in text
    out = io.StringIO()
    run_screen(Console(file=out, width=80, force_terminal=True, color_system=None), Config(zloss_weight=1e-4), 10)
    assert "z-loss*" not in out.getvalue() and "z·w" in out.getvalue() and "trained at weight 0.0001" in out.getvalue()


def test_train_help_explains_the_zloss_scale():
    from click.testing import CliRunner

    from cli import cli
    text = " ".join(CliRunner().invoke(cli, ["train", "--help"]).output.split())
    assert "0 = watched, not trained" in text and "starts near 1,000" in text


def test_header_rows_and_done_lines_fit_80_columns():
    # proves nothing tinyar prints above, in or below the rows wraps in an 80-column terminal,
    # for the longest setting (every loss on, float16)
    from cli import done_lines, header_lines
    cfg = Config(zloss_weight=1e-4, next_embed_weight=0.1, next_embed_kind="l1", mask_prob=0.15, mask_mode="fcm",
                 dtype="float16", steps=10000, eval_every=5000, log_every=5000)
    lines = header_lines(cfg, 872_576, "python stdlib sources", 3_973_711, "CPU:LLVM", Path("runs/default"))
    lines += done_lines(10000, 12345, {"total": 1.23456}, {"val_ce": 1.2345, "val_bpb": 1.781},
                        Path("runs/default/ckpt-00010000.safetensors"))
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=True, color_system=None)
    for line in lines:
        console.print(line)
    run_screen(console, cfg, 10000)
    run_screen(console, Config(next_embed_head=True), 10)   # z-loss off: the other note
    printed = [ln for ln in terminal(out.getvalue(), 10**6) if ln.strip()]
    assert len(printed) > 8 and max(len(ln.rstrip()) for ln in printed) <= 80, \
        max(printed, key=lambda ln: len(ln.rstrip()))


@pytest.mark.slow
def test_compiler_chatter_goes_to_the_run_folders_log_and_comes_back_on_an_error(tmp_path):
    # proves what the C compiler writes (here a clang that always warns) stays out of stdout and
    # stderr and is kept in RUN/compiler.log; and when the compiler fails (the same clang failing
    # from its 5th call: after the device probe, inside training) the user's stderr gets its
    # message and Python's error
    cc, calls = tmp_path / "cc", tmp_path / "calls"
    cc.write_text(f"""#!/bin/sh
n=$(cat {calls} 2>/dev/null || echo 0); echo $((n + 1)) > {calls}
if [ -n "$CC_FAILS" ] && [ "$n" -ge 5 ]; then echo 'error: boom in the compiler' >&2; exit 1; fi
echo '1 warning generated.' >&2
exec clang "$@"
""")
    cc.chmod(0o755)
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(TEXT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CC": str(cc), "DEV": "CPU", "CACHELEVEL": "0",
           "TINYAR_KERNEL_CACHE": "0"}
    cmd = [sys.executable, "cli.py", "train", str(corpus), *TINY_FLAGS, "--log-every", "1", "--eval-every", "2",
           "--out", str(tmp_path / "run"), "--sample-tokens", "0", "--eval-sample-tokens", "0"]
    res = subprocess.run(cmd + ["--steps", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "warning generated" not in res.stdout + res.stderr
    assert "step 2  total" in res.stdout
    assert "1 warning generated." in (tmp_path / "run" / "compiler.log").read_text()
    calls.write_text("0")
    res = subprocess.run(cmd + ["--resume", str(tmp_path / "run"), "--steps", "3"], cwd=ROOT,
                         env=env | {"CC_FAILS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "error: boom in the compiler" in res.stderr and "compiler output" in res.stderr
    assert "Error" in res.stderr.split("end of compiler output")[-1]   # Python's own error follows
    assert "boom" not in res.stdout
