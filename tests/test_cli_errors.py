"""Every bad input to `train` gets one line saying what is wrong and how to fix it, a non-zero
exit code and no traceback. All of these fail before a training step, so nothing compiles
(the few that reach the device check run one tiny probe kernel).
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from click.testing import CliRunner

from cli import cli
from conftest import TEXT, TINY, TINY_FLAGS, error_line, invoke
from tinyar import checkpoint as ckpt
from tinyar.run import StopOnSignal

ROOT = Path(__file__).parent.parent


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT)
    return path






@pytest.mark.parametrize("args, expect", [
    (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
    (["--steps", "-5"], "--steps must be at least 1"),
    (["--seq-len", "1"], "--seq-len must be at least 2"),
    (["--dim", "0"], "--dim must be at least 1"),
    (["--log-every", "0"], "--log-every must be at least 1"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "nan"], "--lr must be a finite number (got nan)"),
    (["--zloss", "inf"], "--zloss must be a finite number"),
    (["--zloss", "-1e-4"], "--zloss is a loss weight and must be >= 0"),
    (["--next-embed", "-0.1"], "--next-embed is a loss weight"),
    (["--mlm", "1"], "--mlm must be in [0, 1)"),
    (["--warmup", "-1"], "--warmup must be >= 0"),
    (["--grad-clip", "-1"], "--grad-clip and --weight-decay must be >= 0"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--heads", "3", "--dim", "16"], "--heads 3 does not divide --dim 16"),
    (["--keep", "0"], "--keep must be at least 1"),
    (["--sample-tokens", "-1"], "--sample-tokens must be >= 0"),
    (["--eval-sample-tokens", "-1"], "--eval-sample-tokens must be >= 0"),   # was silently "off"
    (["--steps", "-1"], "--steps must be at least 1 (got -1)"),
    (["--save-every", "-1"], "--save-every must be at least 1"),
    (["--eval-every", "-10"], "--eval-every must be at least 1"),
    (["--eval-batches", "-1"], "--eval-batches must be at least 1"),
    (["--keep", "-1"], "--keep must be at least 1"),
    (["--seq-len", "5000"], "needs at least 10004"),        # the corpus is 1800 bytes
    (["--steps", "ten"], "Invalid value for '--steps': 'ten' is not a valid integer"),
    (["--mlm-mode", "bert"], "'bert' is not one of 'replace', 'fcm'"),
    (["--dtype", "half"], "'half' is not one of 'float32', 'float16', 'bfloat16'"),
    (["--stpes", "3"], "No such option '--stpes'"),
])
def test_out_of_range_and_malformed_options(corpus, tmp_path, args, expect):
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, *args, "--out", tmp_path / "new" / "run"))
    assert expect in msg
    assert not (tmp_path / "new").exists()       # a refused run leaves no folder behind (nor its parent)


def test_a_refused_corpus_leaves_no_run_folder_and_no_stdin_copy(tmp_path):
    # the corpus is checked after the folder is made (a piped one is copied into it): both go again
    out = tmp_path / "a" / "run"
    res = CliRunner().invoke(cli, ["train", "-", *TINY_FLAGS, "--seq-len", "5000", "--out", str(out)], input=TEXT)
    assert "needs at least 10004" in error_line(res)
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)                                               # a folder the user made stays
    assert "needs at least 10004" in error_line(CliRunner().invoke(
        cli, ["train", "-", *TINY_FLAGS, "--seq-len", "5000", "--out", str(out)], input=TEXT))
    assert out.is_dir()


def test_seq_len_too_long_for_the_corpus_says_what_fits(tmp_path):
    path = tmp_path / "short.txt"
    path.write_bytes(b"x" * 100)
    msg = error_line(invoke("train", path, *TINY_FLAGS[:6], "--seq-len", "64", "--out", tmp_path / "r"))
    assert "has 100 bytes" in msg and "needs at least 132" in msg and "--seq-len 48 or less" in msg


@pytest.mark.parametrize("make, expect", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no files"),
    (lambda d: str(d / "*.nothing"), "no files match the corpus pattern"),
])
def test_corpus_arguments_that_name_nothing(tmp_path, make, expect):
    assert expect in error_line(invoke("train", make(tmp_path), *TINY_FLAGS, "--out", tmp_path / "r"))


def test_out_that_is_a_file(corpus, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--out", f))
    assert f"--out {f} is a file" in msg and f.read_text() == "mine"


def test_read_only_out_folder(corpus, tmp_path):
    # root ignores permission bits, so as root use a folder the kernel itself refuses (sysfs)
    if os.geteuid() == 0:
        ro = Path("/sys/kernel")
        if not ro.is_dir() or os.access(ro, os.W_OK) and not _cannot_create_in(ro):
            pytest.skip("no read-only folder available to root here")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--out", ro))
    assert f"cannot write to run folder {ro}" in msg and "pick another --out" in msg


def _cannot_create_in(folder: Path) -> bool:
    try:
        (folder / f".tinyar-probe-{os.getpid()}").write_bytes(b"")
    except OSError:
        return True
    (folder / f".tinyar-probe-{os.getpid()}").unlink()
    return False


def fake_run(folder: Path, corpus: Path, step=5, **config) -> Path:
    """A run folder with one checkpoint whose metadata is what `train` would write for TINY_FLAGS
    (the arrays are placeholders: every check below fails before weights are loaded)."""
    cfg = TINY.replace(**config)
    meta = {"config": cfg.to_dict(), "step": step, "rng": np.random.default_rng(0).bit_generator.state,
            "corpus": [str(corpus)], "corpus_bytes": corpus.stat().st_size}
    return ckpt.save(folder, step, {"model.w": np.zeros(2, np.float32)}, meta)


def test_existing_run_is_refused_without_resume_or_force(corpus, tmp_path):
    run = tmp_path / "run"
    path = fake_run(run, corpus)
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--out", run))
    assert f"{run} already holds a run" in msg and f"--resume {run}" in msg and "--force" in msg
    assert ckpt.latest(run) == path                                  # nothing was touched


def sample(*args):
    """`python cli.py sample ARGS...` in this process, without the user's kernel cache (loading it
    would grow this process by hundreds of MB, and test_corpus_sources measures a child's peak RSS,
    which on Linux starts from its parent's)."""
    return CliRunner().invoke(cli, ["sample", *map(str, args)], env={"TINYAR_KERNEL_CACHE": "0"})


def test_a_symbolic_link_loop_or_a_file_where_a_run_folder_goes(corpus, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    for res in (invoke("train", corpus, *TINY_FLAGS, "--out", loop), invoke("train", "--resume", loop), sample(loop)):
        msg = error_line(res)
        assert f"{loop} is a symbolic link loop" in msg and f"rm {loop}" in msg, msg
    path = fake_run(tmp_path / "run", corpus)
    for res, who in ((invoke("train", "--resume", path), f"--resume {path}"), (sample(path), f"error: {path}")):
        msg = error_line(res)
        assert f"{who} is a file, not a run folder; give the folder that holds it, {path.parent}" in msg, msg


def test_resume_errors(corpus, tmp_path):
    run = tmp_path / "run"
    assert "is not a run folder" in error_line(invoke("train", "--resume", tmp_path / "nope"))
    run.mkdir()
    assert f"no checkpoint in {run}" in error_line(invoke("train", "--resume", run))
    fake_run(run, corpus, step=5)
    # the model shape is fixed by the saved weights
    msg = error_line(invoke("train", "--resume", run, "--dim", "32"))
    assert "--dim 32 differs from the resumed run's 16" in msg
    assert "--next-embed can't be switched" in error_line(invoke("train", "--resume", run, "--next-embed", "0.1"))
    # a finished run needs a larger --steps
    done = tmp_path / "done"
    fake_run(done, corpus, step=40)
    assert "already at step 40 of 40; pass --steps" in error_line(invoke("train", "--resume", done))
    assert "--steps must be at least 1 (got -1)" in error_line(invoke("train", "--resume", done, "--steps", "-1"))
    assert "name different folders" in error_line(invoke("train", "--resume", run, "--out", tmp_path / "x"))


def test_resume_from_a_damaged_or_foreign_checkpoint_names_the_file(corpus, tmp_path):
    run = tmp_path / "run"
    fake_run(run, corpus, step=5)
    newest = fake_run(run, corpus, step=10)
    newest.write_bytes(newest.read_bytes()[:100])                     # copied half-way
    msg = error_line(invoke("train", "--resume", run))
    assert str(newest) in msg and "truncated or corrupted" in msg and "ckpt-00000005.safetensors" in msg
    # NaN weights, and one flipped bit: refused before training, never called "the last good checkpoint"
    m = ckpt.read_safetensors(ckpt.checkpoints(run)[0])[1] | {"step": 10}
    ckpt.save(run, 10, {"model.w": np.array([np.nan, 0], np.float32)}, m)
    nan_msg = error_line(invoke("train", "--resume", run))
    ckpt.save(run, 10, {"model.w": np.array([2.0, 0], np.float32)}, m)
    raw = bytearray(newest.read_bytes())
    raw[-1] ^= 1                                                       # in model.w's last byte
    newest.write_bytes(bytes(raw))
    flip_msg = error_line(invoke("train", "--resume", run))
    for msg, words in ((nan_msg, "model.w holds NaN"), (flip_msg, "tensor model.w does not match its checksum")):
        assert str(newest) in msg and words in msg and "fall back to the one before it, ckpt-00000005" in msg
        assert "last good" not in msg and "--lr" not in msg
    newest.unlink()
    fake_run(run, corpus, step=10, vocab=512)                         # another vocabulary
    msg = error_line(invoke("train", "--resume", run))
    assert "ckpt-00000010.safetensors" in msg and "vocabulary of 512 tokens" in msg


@pytest.mark.parametrize("change, words", [
    (dict(config={"dim": "32"}), "holds an unusable config (config field dim is '32' (str), not int)"),
    (dict(config={"lr": True}), "holds an unusable config (config field lr is True (bool), not float)"),
    (dict(config={"depth": -2}), "holds an unusable config (--depth must be at least 1 (got -2))"),
    (dict(step=-3), "holds step -3, not a count of steps"),
    (dict(step="5"), "holds step '5', not a count of steps"),
])
def test_a_checkpoint_with_a_wrong_config_or_step_is_refused_by_train_and_sample(corpus, tmp_path, change, words):
    run = tmp_path / "run"
    fake_run(run, corpus, step=5)
    path = fake_run(run, corpus, step=10)
    arrays, meta = ckpt.read_safetensors(path)
    meta["config"] |= change.get("config", {})
    meta["step"] = change.get("step", meta["step"])
    ckpt.write_safetensors(path, arrays, meta)
    for res in (invoke("train", "--resume", run, "--steps", "50"), sample(run)):
        msg = error_line(res)
        assert f"checkpoint {path} {words}" in msg and "fall back to the one before it, ckpt-00000005" in msg, msg


def test_a_model_too_large_for_memory_is_refused_before_it_is_built(corpus, tmp_path):
    # --dim 65536: 206 billion parameters; numpy used to draw weights for minutes, then die
    msg = error_line(invoke("train", corpus, "--dim", "65536", "--out", tmp_path / "big"))
    assert "a model of 206,202,535,936 parameters (--dim 65536, --depth 4) needs at least 3,072.7 GiB" in msg
    assert "GiB is available: pick a smaller --dim or --depth" in msg and not (tmp_path / "big").exists()


def test_one_device_by_index_gets_the_cuda_visible_devices_hint_even_without_cuda(corpus, tmp_path):
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--device", "CUDA:1", "--out", tmp_path / "r"))
    assert "CUDA_VISIBLE_DEVICES=1" in msg and "use --device CUDA " in msg and "does not work here" not in msg


def test_resume_with_tensors_that_do_not_match_the_config(corpus, tmp_path):
    # the config in the file says TINY, the tensors are something else: caught when loading,
    # before any step (costs one device probe, no training kernels)
    run = tmp_path / "run"
    path = fake_run(run, corpus, step=5)
    msg = error_line(invoke("train", "--resume", run, "--sample-tokens", "0"))
    assert msg.startswith(f"error: {path}: checkpoint") and "different model configuration" in msg


def test_unknown_device_lists_the_working_ones(corpus, tmp_path):
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--device", "NOSUCHDEV", "--out", tmp_path / "r"))
    assert "device NOSUCHDEV does not work here" in msg and "working devices: " in msg
    assert "CPU" in msg.split("working devices: ")[1]               # the suite itself runs on a working device


def test_a_bad_device_is_reported_before_the_run_folder(corpus, tmp_path):
    # proves the order of the checks: `--device CUDA` on a machine without it, into a folder that
    # holds a run, says the device is the problem (fixing the folder first would not have helped)
    run = tmp_path / "run"
    fake_run(run, corpus)
    msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--device", "NOSUCHDEV", "--out", run))
    assert "device NOSUCHDEV does not work here" in msg and "already holds a run" not in msg


@pytest.mark.slow
def test_no_usable_device_says_to_install_clang(corpus, tmp_path):
    # a real process with clang removed from PATH: tinygrad's CPU backend can't compile, and the
    # probe must notice (compiled kernels cached on disk would otherwise hide it until step 1)
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare), "HOME": os.environ.get("HOME", "/tmp"), "PYTHONPATH": str(ROOT), "DEV": "CPU"}
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", str(corpus), *TINY_FLAGS,
                          "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "no usable tinygrad device" in lines[0] and "apt-get install -y clang" in lines[0]


def test_stop_on_signal_first_asks_then_second_quits():
    # the handler behind Ctrl-C / SIGTERM: the first signal only sets a flag (the step finishes and
    # is saved), a second one raises KeyboardInterrupt; the old handlers come back afterwards
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
