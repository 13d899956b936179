"""The run folder (tinyar/run.py) without training: metrics trimming, what counts as a run,
--force's deletion, and the lessons' "resume only if exactly this config" path. The train
command's start, resume and stop rules are tested through the CLI (test_cli_errors.py,
test_interrupt_resume.py)."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY, TINY_NE
from tinyar import checkpoint as ckpt
from tinyar.run import METRICS, Run, RunError, check_memory, clear_run, holds_run, lock_folder, trim_metrics


def test_trim_metrics_drops_rows_after_the_resumed_checkpoint_and_a_torn_last_line(tmp_path):
    rows = [{"kind": "train", "step": s, "ce": 1.0} for s in range(1, 8)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"kind": "train", "st'
    (tmp_path / METRICS).write_text(text)
    trim_metrics(tmp_path, 5)
    got = [json.loads(line) for line in (tmp_path / METRICS).read_text().splitlines()]
    assert got == rows[:5]


def test_holds_run_and_clear_run_touch_only_tinyars_files(tmp_path):
    assert not holds_run(tmp_path)
    (tmp_path / METRICS).write_text("")
    assert not holds_run(tmp_path)                       # an empty log is no work to lose
    (tmp_path / METRICS).write_text('{"kind": "train", "step": 1}\n')
    assert holds_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    ckpt.save(tmp_path, 1, {"w": np.zeros(2, np.float32)}, {"config": TINY.to_dict(), "step": 1, "rng": {}})
    clear_run(tmp_path)
    assert not holds_run(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resume_if_same_restores_only_a_checkpoint_of_exactly_this_config(tmp_path):
    from tinyar.train import Trainer
    t = Trainer(TINY)
    t.step = 7
    t.rng.random(3)   # the data RNG moved on: the restored one must continue from here
    ckpt.save(tmp_path, t.step, t.state_arrays(), t.state_meta(), keep=1)
    run = Run(tmp_path, TINY, keep=1)
    assert run.resume_if_same() and run.trainer.step == 7 and run.path == ckpt.latest(tmp_path)
    assert run.trainer.rng.random() == t.rng.random()
    other = Run(tmp_path, TINY.replace(lr=0.5), keep=1)
    assert not other.resume_if_same() and other.path is None and other.meta is None
    ckpt.latest(tmp_path).write_bytes(b"torn")
    assert not Run(tmp_path, TINY, keep=1).resume_if_same()


def test_a_run_folder_has_one_writer(tmp_path):
    # proves a second writer is refused while the first lives (two trains interleaved metrics.jsonl
    # and overwrote each other's checkpoints), and that the OS frees the folder when the holder dies
    import signal
    import subprocess
    import sys

    from conftest import TEXT, TINY_FLAGS, error_line, invoke
    run, corpus = tmp_path / "run", tmp_path / "c.txt"
    corpus.write_bytes(TEXT)
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from tinyar.run import lock_folder; lock_folder(Path(sys.argv[1])); "
                               "print('locked', flush=True); time.sleep(3600)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"     # an event, not a sleep
        msg = error_line(invoke("train", corpus, *TINY_FLAGS, "--out", run))
        assert f"is being written by process {holder.pid}" in msg and "pick another --out" in msg
        assert not (run / "metrics.jsonl").exists()            # nothing of the refused run written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock_folder(run)                                            # kill -9 released it
    lock_folder(run)                                            # and this process may ask again
    run2 = Run(run, TINY)
    run2.prepare_folder()                                       # held by this process ...
    run2.close()
    probe = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                            "from tinyar.run import lock_folder; lock_folder(Path(sys.argv[1]))", str(run)],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr                 # ... and free again after close()


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_trimming_metrics_on_resume_changes_nothing_and_leaves_no_temp_file(tmp_path, monkeypatch):
    rows = "".join(json.dumps({"kind": "train", "step": s}) + "\n" for s in range(1, 8))
    (tmp_path / METRICS).write_text(rows)
    real = Path.write_text

    def half_then_full(self, text, *a, **k):   # the temp file is made, then the disk fills up
        real(self, text[:10])
        disk_full()
    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(RunError) as e:
        trim_metrics(tmp_path, 5)
    assert str(e.value) == (f"cannot trim {tmp_path / METRICS} to step 5 before resuming: No space left on device; "
                            f"it is unchanged (free some space, then resume again)")
    assert (tmp_path / METRICS).read_text() == rows and [p.name for p in tmp_path.iterdir()] == [METRICS]


def test_a_full_disk_while_logging_a_row_is_one_run_error(tmp_path):
    class Full:
        def write(self, data):
            disk_full()
    run = Run(tmp_path, TINY)
    with pytest.raises(RunError) as e:
        run.log(Full(), {"kind": "train", "step": 3})
    assert str(e.value) == (f"cannot write {tmp_path / METRICS} at step 3: No space left on device; no checkpoint "
                            f"was saved yet: free some space, then start again with --force")
    path = ckpt.save(tmp_path, 2, {"w": np.zeros(2, np.float32)}, {"config": TINY.to_dict(), "step": 2, "rng": {}})
    run.saved_step = 2
    with pytest.raises(RunError, match=f"the last checkpoint, {path}, is intact: free some space, then resume with "
                                       f"--resume {tmp_path}$"):
        run.log(Full(), {"kind": "train", "step": 3})


def test_leftover_temp_files_of_dead_writers_are_removed_when_the_folder_is_opened(tmp_path):
    # a crash mid-write leaves .NAME.tmpPID files; the next start (fresh, --resume or --force) of that
    # run deletes those whose process is gone, never a live writer's, never the user's own files
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = str(os.getpid())
    stale = [f".ckpt-00000010.safetensors.tmp{dead}", f".stdin.bin.tmp{dead}", f".metrics.jsonl.tmp{dead}",
             f".write-test-{dead}"]
    kept = [f".ckpt-00000020.safetensors.tmp{live}", f"notes.tmp{dead}", f".ckpt-1.safetensors.tmp{dead}x"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"half")
    run = Run(tmp_path, TINY)
    run.prepare_folder(force=True)
    run.close()
    assert sorted(p.name for p in run.leftovers) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_leftovers_go_on_resume_through_the_cli(tmp_path):
    # the resume below fails after the folder is opened (placeholder tensors): the leftovers are gone
    from conftest import invoke
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"x" * 500)
    run = tmp_path / "run"
    meta = {"config": TINY.to_dict(), "step": 5, "rng": np.random.default_rng(0).bit_generator.state,
            "corpus": [str(corpus)]}
    ckpt.save(run, 5, {"model.w": np.zeros(2, np.float32)}, meta)
    (run / ".ckpt-00000010.safetensors.tmp999999999").write_bytes(b"half")   # no such pid (above pid_max)
    res = invoke("train", "--resume", run, "--sample-tokens", "0")
    assert res.exit_code == 2 and "different model configuration" in res.output
    assert "removed 1 temp file(s) a crashed run left" in res.output
    assert not (run / ".ckpt-00000010.safetensors.tmp999999999").exists()


def test_check_memory_refuses_what_cannot_fit():
    from tinyar.model import Decoder, param_count
    assert param_count(TINY) == Decoder(TINY).num_params()
    assert param_count(TINY_NE) == Decoder(TINY_NE).num_params()
    need = 16 * param_count(TINY)
    check_memory(TINY, "CPU", available=need)
    with pytest.raises(RunError, match=f"a model of {param_count(TINY):,} parameters .* needs at least"):
        check_memory(TINY, "CPU", available=need - 1)
    check_memory(TINY, "CUDA", available=4 * param_count(TINY))          # a GPU: the host draws the weights
    with pytest.raises(RunError):
        check_memory(TINY, ("CPU:0", "CPU:1"), available=need)          # two replicas


def test_a_pre_checksum_checkpoint_is_never_the_last_good_one_until_a_step_proves_it(tmp_path):
    # damaged AdamW moments in a file from before checksums pass every check on load and make the
    # next step diverge: the message must blame the file, not call it good and advise a lower --lr
    from cli import divergence_message
    from tinyar.train import Diverged
    old, new = tmp_path / "ckpt-00000004.safetensors", tmp_path / "ckpt-00000002.safetensors"
    ckpt.save(tmp_path, 2, {"w": np.zeros(2, np.float32)}, {"config": TINY.to_dict(), "step": 2, "rng": {}})
    legacy = {"model.w": np.zeros(2, np.float32), "optim.params.0": np.zeros(2, np.float32),
              "optim.optimizers.0.params.0": np.zeros(2, np.float32)}
    from test_checkpoint import legacy_file
    legacy_file(old, legacy, {"config": TINY.to_dict(), "step": 4, "rng": {}})
    run = Run(tmp_path, TINY)
    run.path, run.meta, run.saved_step = old, {"step": 4}, 4                  # resumed, nothing saved since
    assert run.last_good() is None
    msg = divergence_message(Diverged(5, "ce", float("nan")), TINY, tmp_path, (), run.last_good(), run.path)
    assert f"The checkpoint it resumed from, {old}, was written before checksums and may be damaged" in msg
    assert "delete it to fall back to the one before it, ckpt-00000002" in msg
    assert "last good" not in msg and "--lr" not in msg
    run.path = new                                                           # a checksummed file: proven
    run.meta, run.saved_step = {"step": 2}, 2
    old.unlink()
    assert run.last_good() == new
    assert "kept the last good checkpoint" in divergence_message(Diverged(3, "ce", float("nan")), TINY, tmp_path,
                                                                 (), run.last_good(), run.path)
