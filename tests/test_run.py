"""The run folder (tinyar/run.py) without training: metrics trimming, what counts as a run,
--force's deletion, and the lessons' "resume only if exactly this config" path. The train
command's start, resume and stop rules are tested through the CLI (test_cli_errors.py,
test_interrupt_resume.py)."""
import json

import numpy as np

from conftest import TINY
from tinyar import checkpoint as ckpt
from tinyar.run import METRICS, Run, clear_run, holds_run, lock_folder, trim_metrics


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
