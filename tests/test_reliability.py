"""End to end through `train` (TINY, in this process): a disk that fills up while metrics.jsonl is
written, and a checkpoint from before checksums whose damage only training reveals."""
import errno
import json
import os

import numpy as np
import pytest
from tinygrad.nn.state import get_state_dict

import tinyar.run
from conftest import TEXT, TINY, TINY_FLAGS, cli_flags, invoke
from test_checkpoint import legacy_file
from tinyar import checkpoint as ckpt
from tinyar.train import Trainer

pytestmark = pytest.mark.slow   # real training steps

RUN_FLAGS = [*TINY_FLAGS, "--steps", "4", "--log-every", "1", "--save-every", "2", "--eval-every", "100",
             "--sample-tokens", "0", "--eval-sample-tokens", "0"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT)
    return path


class FillsUp:
    """metrics.jsonl on a disk that fills up in the middle of the row of step `at`."""

    def __init__(self, real, at: int):
        self.real, self.at = real, at

    def write(self, data: bytes) -> int:
        if json.loads(data)["step"] == self.at:
            self.real.write(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.real.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_a_full_disk_while_logging_is_one_line_and_the_run_resumes_cleanly(tmp_path, corpus, monkeypatch):
    run = tmp_path / "run"
    real_open = tinyar.run.Run.open_metrics
    monkeypatch.setattr(tinyar.run.Run, "open_metrics", lambda self: FillsUp(real_open(self), at=3))
    res = invoke("train", corpus, *RUN_FLAGS, "--out", run)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    last = res.output.strip().splitlines()[-1]
    assert last == (f"error: cannot write {run / 'metrics.jsonl'} at step 3: No space left on device; the last "
                    f"checkpoint, {run / 'ckpt-00000002.safetensors'}, is intact: free some space, then resume "
                    f"with --resume {run}")
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []      # no temp file
    monkeypatch.undo()                                                                # space freed
    res = invoke("train", "--resume", run)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]          # the torn row is gone


def test_damage_a_pre_checksum_file_hides_is_blamed_on_the_file_not_the_learning_rate(tmp_path, corpus):
    # a file as tinyar wrote it before checksums (each weight three times), whose AdamW second
    # moments are damaged (negative: no copy to compare them with): it loads, the next update is NaN
    cfg = TINY.replace(steps=4)
    t = Trainer(cfg)
    arrays = t.state_arrays()
    names = {id(v): f"model.{k}" for k, v in get_state_dict(t.model).items()}
    for k, v in get_state_dict(t.opt).items():
        if id(v) in names:
            arrays[f"optim.{k}"] = arrays[names[id(v)]]
    second = sorted(k for k in arrays if ".v." in k)
    assert second
    for k in second:
        arrays[k] = np.full_like(arrays[k], -1.0)
    run = tmp_path / "run"
    run.mkdir()
    meta = t.state_meta() | {"corpus": [str(corpus)]}
    legacy_file(run / "ckpt-00000000.safetensors", arrays, meta)
    res = invoke("train", "--resume", run, *cli_flags(cfg, "steps"), "--log-every", "1", "--save-every", "100",
                 "--sample-tokens", "0", "--eval-sample-tokens", "0")
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: training diverged at step ") and "Traceback" not in res.output
    assert (f"The checkpoint it resumed from, {run / 'ckpt-00000000.safetensors'}, was written before checksums "
            f"and may be damaged: no earlier checkpoint") in last
    assert "last good" not in last and "--lr" not in last
    assert ckpt.checkpoints(run) == [run / "ckpt-00000000.safetensors"]
