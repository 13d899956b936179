"""What every lesson shares: the one small model shape, and `check`.

Every lesson builds the same tiny model (tests/conftest.py's TINY: 16 wide, 2 blocks, 2 heads,
windows of 8 bytes, 2 windows a batch), because tinygrad generates and compiles kernels for
each new shape; one shape means the lessons (and the tests) reuse each other's kernels.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's tinyar, installed or not

from tinyar import compiler_log, kernel_cache  # noqa: E402
from tinyar.config import Config  # noqa: E402

# generated kernels kept in ~/.cache/tinyar, so a lesson's second run starts in seconds; in a file
# of their own (lessons-kernels-*.pkl), since every process loads the whole file at start-up and
# the one `train` fills grows with each model shape (60 MB here: 4 s a lesson just to read it)
if "TINYAR_KERNEL_CACHE" not in os.environ:
    os.environ["TINYAR_KERNEL_CACHE"] = str(kernel_cache.path().with_name("lessons-" + kernel_cache.path().name))
kernel_cache.enable()

# The shape is the tests' TINY; 300 steps take seconds once compiled (steps don't change kernels).
CFG = Config(dim=16, depth=2, heads=2, seq_len=8, batch_size=2, steps=300, warmup=20, lr=1e-2,
             eval_every=100, eval_batches=32, log_every=30, save_every=300)
B, T, D = CFG.batch_size, CFG.seq_len, CFG.dim
RUNS = Path(os.environ.get("TINYAR_LESSON_RUNS", Path(__file__).resolve().parent.parent / "runs" / "lessons"))
# clang and PoCL write "1 warning generated." to the process's stderr while tinygrad compiles:
# keep that in RUNS/compiler-<lesson>.log, so the output is only the lesson's (an error shows it)
LESSON = Path(sys.argv[0]).resolve()
if LESSON.parent == Path(__file__).resolve().parent:   # run as a lesson (not imported by a test)
    compiler_log.until_exit(RUNS / f"compiler-{LESSON.stem}.log")


def check(name: str, value: float, expect: float, tol: float = 0.0, op: str | None = None) -> None:
    """Print `CHECK name = value   expect op expect (± tol)` and stop the lesson if it is false.

    op is "=" (exact; the default without tol), "≈" (|value - expect| <= tol; the default with
    tol), "<" or ">". tests/test_lessons.py re-reads these lines, so a lesson can't drift away
    from the library without a test failing."""
    value, op = float(value), op or ("≈" if tol else "=")
    ok = {"=": value == expect, "≈": abs(value - expect) <= tol, "<": value < expect, ">": value > expect}[op]
    bound = f"{op} {expect:.6g}" + (f" ± {tol:g}" if op == "≈" else "")
    print(f"CHECK {name} = {value:.6g}   expect {bound}   {'ok' if ok else 'MISMATCH'}", flush=True)
    if not ok:
        raise SystemExit(f"lesson check {name} failed: got {value:.6g}, expected {bound}")


def course_trainer():
    """A Trainer holding the course model: CFG trained for CFG.steps steps on the default corpus
    with the plain loss (what lesson 9 takes apart). The first call trains it (a minute or two,
    mostly compiling kernels) in the run folder RUNS, as `python cli.py train` would; later
    calls, in any lesson, load it."""
    from tinyar.run import Run
    run = Run(RUNS, CFG, keep=1)
    if run.resume_if_same():   # RUNS holds a model of exactly this CFG
        print(f"(course model loaded from {run.path})")
        return run.trainer
    print(f"(training the course model for {CFG.steps} steps; it is kept in {RUNS} for the other lessons)")
    run.open(force=True)       # anything else in RUNS (another CFG's model) is replaced
    run.build(force=True)
    run.train()
    return run.trainer
