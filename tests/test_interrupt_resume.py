"""Interruptions, exact resume and divergence, through the real `train` command.

One chain of runs on a folder corpus (text + binary files), all with the suite's TINY shape
(plus --mlm/--zloss, as in test_train.py, so the compiled kernels are shared):

  A  a real process, Ctrl-C (SIGINT) after its first row     -> exit 130, checkpoint, resume command
  B  that resume command, SIGTERM in its first new step      -> exit 143, checkpoint, resume command
  C  that resume command, to the end                         -> exit 0
  R  the same 40 steps straight, in this process (the reference)

A+B+C must give R's numbers exactly: every loss component, gradient norm and learning rate of
every step, the validation rows, and the final weights, AdamW moments and step counters
(b1_t, b2_t) bit for bit. B and C run in this process (CliRunner) to share compiled kernels;
A is the only training subprocess, and it compiles while R does. Both signals are timed by
events (a row read from a pipe, a step taken), never by the clock, so a busy machine changes
nothing.
"""
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from conftest import cli_flags
from tinyar import checkpoint as ckpt
from tinyar.config import COMPONENTS, Config
from tinyar.data import Corpus, corpus_files
from tinyar.run import StopOnSignal
from tinyar.train import Trainer, train

pytestmark = pytest.mark.slow   # real training runs, a subprocess among them

ROOT = Path(__file__).parent.parent
CHECKED = (*COMPONENTS, "grad_norm")
STEPS = 40
# the suite's TINY shape with masking and the z-loss (and Config's other defaults, as the CLI
# has them), for the in-process reference run; the CLI runs get the same settings as flags
CFG = Config(dim=16, depth=2, heads=2, seq_len=8, batch_size=2, mask_prob=0.25, zloss_weight=1e-4, lr=0.01,
             warmup=4, steps=STEPS, log_every=1, eval_every=20, save_every=1000)
FLAGS = cli_flags(CFG, "dim", "depth", "heads", "seq_len", "batch_size", "mask_prob", "zloss_weight", "lr", "warmup")
RUN_FLAGS = [*FLAGS, *cli_flags(CFG, "steps", "log_every", "eval_every", "save_every")]


def rows_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k != "tok_s"} for r in rows]


def resume_args(message: str) -> list[str]:
    """The arguments of the 'resume with: python cli.py ...' line a stopped run printed."""
    line = next(ln for ln in message.splitlines() if ln.startswith("resume with: "))
    words = shlex.split(line.removeprefix("resume with: "))
    assert words[0] == "python" and words[1].endswith("cli.py"), line
    return words[2:]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus") / "texts"
    (d / "more").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"the quick brown fox jumps over the lazy dog. " * 30)
    (d / "more" / "b.txt").write_bytes("naïve café, ünïcödé text\n".encode() * 20)
    (d / "z.bin").write_bytes(bytes(range(256)) * 3)
    return d


class SigintRun:
    """Run A: `python cli.py train` in a subprocess; SIGINT as soon as its first row prints.

    Independent of the machine's load: the child's stdout is a pipe of one page (4 KiB) that
    this test stops reading at the first row until the child reports the signal on stderr. So
    the child can print at most 4 KiB past its first row before the signal reaches it (rows 2 to
    40 take ~4.9 KB), and can't finish all its steps first however late this busy process sends it."""
    PIPE_BYTES = 4096

    def __init__(self, corpus: Path, run: Path):
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, self.PIPE_BYTES)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "train", str(corpus), *RUN_FLAGS,
                                      "--out", str(run)], stdout=write_end, stderr=subprocess.PIPE,
                                     text=True, env=env)
        os.close(write_end)
        self.out = os.fdopen(read_end, "rb", buffering=0)   # unbuffered: readline never reads ahead
        self.stdout, self.stderr, self.signalled_after, self.done = [], [], None, None
        self.took_signal = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._watch_stdout, self._watch_stderr)]
        for t in self.threads:
            t.start()

    def _watch_stdout(self):
        for line in iter(self.out.readline, b""):
            self.stdout.append(line.decode("utf-8", "replace"))
            if self.signalled_after is None and self.stdout[-1].startswith("step "):
                self.signalled_after = self.stdout[-1]
                self.proc.send_signal(signal.SIGINT)
                self.took_signal.wait(1800)    # read nothing more until the child has the signal

    def _watch_stderr(self):
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.startswith("SIGINT: finishing this step"):
                self.took_signal.set()
        self.took_signal.set()                 # the child ended (e.g. failed before any row)

    def result(self, timeout=1800) -> tuple[int, str, str]:
        if self.done is None:
            self.proc.wait(timeout)
            for t in self.threads:
                t.join(60)
            self.done = self.proc.returncode, "".join(self.stdout), "".join(self.stderr)
        return self.done


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("sigint") / "run"


@pytest.fixture(scope="module")
def run_a(corpus, run_dir):
    return SigintRun(corpus, run_dir)      # starts now, compiles alongside the reference below


@pytest.fixture(scope="module")
def reference(run_a, corpus):
    """Run R: all steps straight, in this process, same seed and device."""
    trainer = Trainer(CFG)
    rows = list(train(trainer, Corpus(corpus, CFG.seq_len)))
    return rows, trainer.state_arrays(), trainer.state_meta()


@pytest.fixture(scope="module")
def run_b(run_a, reference, run_dir):
    """Run B: run A's printed resume command, in this process, stopped by a real SIGTERM. The
    signal is sent from inside the resumed run's first new step (this process to itself), so it
    arrives before the run can finish however busy the machine is."""
    code, _, stderr = run_a.result()
    assert code == 130, stderr
    real_step, sent_at = Trainer.train_step, []

    def step_then_sigterm(self, *args, **kwargs):
        row = real_step(self, *args, **kwargs)
        if not sent_at:
            # only with train's handler in place (else SIGTERM would end pytest)
            assert isinstance(getattr(signal.getsignal(signal.SIGTERM), "__self__", None), StopOnSignal)
            sent_at.append(self.step)
            os.kill(os.getpid(), signal.SIGTERM)
        return row

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_step", step_then_sigterm)
        return CliRunner().invoke(cli, resume_args(stderr))


def test_sigint_finishes_the_step_saves_and_prints_the_resume_command(run_a, reference, run_dir):
    code, stdout, stderr = run_a.result()
    assert code == 130 and "Traceback" not in stderr, stderr
    assert "SIGINT: finishing this step, then saving a checkpoint" in stderr
    saved = ckpt.latest(run_dir)
    step = int(saved.stem.split("-")[1])
    assert 1 <= step < STEPS
    assert f"SIGINT: stopped after step {step} of {STEPS}; checkpoint {saved}" in stderr
    assert resume_args(stderr)[:3] == ["train", "--resume", str(run_dir)]
    # the checkpoint holds the step and everything logged so far ends at that step
    _, meta = ckpt.read_safetensors(saved)
    assert meta["step"] == step and rows_of(run_dir)[-1]["step"] == step


def test_sigterm_in_a_resumed_run_saves_again(run_b, run_dir):
    assert run_b.exit_code == 143, run_b.output
    assert "resuming from" in run_b.output and "SIGTERM: stopped after step" in run_b.output
    assert resume_args(run_b.output)[:3] == ["train", "--resume", str(run_dir)]


def test_interrupted_twice_then_resumed_equals_one_straight_run(run_b, reference, run_dir, corpus):
    # N steps + resume + M steps + resume + K steps == N+M+K steps straight, exactly
    res = CliRunner().invoke(cli, resume_args(run_b.output) + ["--sample-tokens", "0"])
    assert res.exit_code == 0, res.output
    ref_rows, ref_arrays, ref_meta = reference
    got = rows_of(run_dir)
    assert [r["step"] for r in got if r["kind"] == "train"] == list(range(1, STEPS + 1))
    assert without_timing(got) == without_timing(ref_rows)   # every component, every step, ==
    final = ckpt.latest(run_dir)
    arrays, meta = ckpt.read_safetensors(final)
    assert meta["step"] == STEPS and meta["rng"] == json.loads(json.dumps(ref_meta["rng"]))
    assert Config.from_dict(meta["config"]) == CFG           # the runs really used the reference's settings
    assert set(arrays) == set(ref_arrays)
    assert any(".b1_t" in k for k in arrays) and any(".m." in k for k in arrays)
    for name, a in ref_arrays.items():
        assert np.array_equal(arrays[name], a), name          # weights, moments, b1_t/b2_t, lr: bit for bit
    # the corpus was remembered from run A (no corpus argument on resume); three stops, three saves
    assert meta["corpus"] == [str(corpus)]
    assert len(ckpt.checkpoints(run_dir)) == 3


def test_divergence_stops_names_the_component_and_keeps_the_last_good_checkpoint(tmp_path, reference, corpus):
    # an absurd learning rate, the reference's corpus piped through stdin, and --force over an
    # older run: the stale checkpoint goes, training stops at the first NaN/inf with a one-line
    # error, and no checkpoint holds a non-finite number
    run = tmp_path / "run"
    run.mkdir()
    (run / "ckpt-00000999.safetensors").write_bytes(b"an older run")
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 999}\n')
    text = b"".join(p.read_bytes() for p in corpus_files([corpus]))   # the same byte stream as R's
    res = CliRunner().invoke(cli, ["train", "-", *FLAGS, "--lr", "1e30", "--warmup", "1", "--steps", "12",
                                   "--log-every", "1", "--save-every", "1", "--out", str(run), "--force",
                                   "--sample-tokens", "0"], input=text)
    assert res.exit_code == 1, res.output
    err = res.output.strip().splitlines()[-1]
    assert err.startswith("error: training diverged at step ") and "Traceback" not in res.output
    step = int(err.split("at step ")[1].split(":")[0])
    component = err.split(f"step {step}: ")[1].split(" is ")[0]
    assert component in ("ce", "zloss", "total", "grad_norm") or component.startswith("the weights"), err
    assert "lower --lr (now 1e+30" in err and "nothing after it was saved" in err
    assert (run / "stdin.bin").read_bytes() == text
    # step 1's numbers belong to the initial weights, whatever the learning rate: equal to R's
    # (a trainer that read them after the update would report NaN here, a false divergence)
    assert step > 1
    first, ref_first = rows_of(run)[0], reference[0][0]
    assert first["step"] == ref_first["step"] == 1
    assert {k: first[k] for k in CHECKED} == {k: ref_first[k] for k in CHECKED}
    kept = ckpt.checkpoints(run)
    assert "ckpt-00000999.safetensors" not in [p.name for p in kept]
    if step > 1:
        assert kept and f"kept the last good checkpoint {kept[-1]}" in err
        arrays, meta = ckpt.read_safetensors(kept[-1])
        assert meta["step"] == step - 1 and all(np.isfinite(a).all() for a in arrays.values())
    assert all(r["step"] < step for r in rows_of(run))
