"""The run folder (tinyar/run.py) without training: metrics trimming, what counts as a run,
--force's deletion, and the lessons' "resume only if exactly this config" path. The train
command's start, resume and stop rules are tested through the CLI (test_cli_errors.py,
test_interrupt_resume.py)."""
import json

import numpy as np

from conftest import TINY
from tinyar import checkpoint as ckpt
from tinyar.run import METRICS, Run, clear_run, holds_run, trim_metrics


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
