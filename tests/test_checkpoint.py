"""Checkpoint files: atomic writes, clear errors for damaged or foreign files, --keep, no pickle.

No model is trained here: checkpoints are written from small numpy arrays, so these run in
about a second.
"""
import errno
import json
import os
import pickle
import struct

import numpy as np
import pytest

from conftest import TINY
from tinyar import checkpoint as ckpt
from tinyar.checkpoint import CheckpointError


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"model.w": rng.standard_normal((4, 3)).astype(np.float32), "optim.b1_t": np.array([0.9], np.float32)}


def meta(step=3, **config):
    return {"config": TINY.replace(**config).to_dict(), "step": step,
            "rng": np.random.default_rng(0).bit_generator.state}


def test_round_trip_is_exact(tmp_path):
    # proves every array and the metadata (config, step, the data RNG state) come back bit for bit
    path = ckpt.save(tmp_path, 3, arrays(), meta())
    got, m = ckpt.read_safetensors(path)
    for k, v in arrays().items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    assert m == json.loads(json.dumps(meta()))
    cfg, _, _ = ckpt.load(path)
    assert cfg == TINY


def test_a_failed_write_never_replaces_or_removes_the_previous_checkpoint(tmp_path, monkeypatch):
    # proves atomicity: the disk "fills up" while the new file is written (fsync fails) ->
    # a CheckpointError naming the file, the old checkpoint byte-identical, no partial new
    # file, no temp file left behind, and --keep pruning did not run
    good = ckpt.save(tmp_path, 1, arrays(0), meta(1), keep=1)
    before = good.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match=r"ckpt-00000002\.safetensors.*No space left"):
        ckpt.save(tmp_path, 2, arrays(1), meta(2), keep=1)
    with pytest.raises(CheckpointError, match="No space left"):       # overwriting in place fails too ...
        ckpt.write_safetensors(good, arrays(1), meta(1))
    assert good.read_bytes() == before                                # ... and leaves the old bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]
    assert ckpt.latest(tmp_path) == good


def test_a_leftover_temp_file_from_a_crash_is_never_taken_for_a_checkpoint(tmp_path):
    # proves a process killed mid-write (temp file left, rename never done) can't be resumed from
    good = ckpt.save(tmp_path, 5, arrays(), meta(5))
    (tmp_path / ".ckpt-00000009.safetensors.tmp4242").write_bytes(b"half a file")
    assert ckpt.checkpoints(tmp_path) == [good] and ckpt.latest(tmp_path) == good


@pytest.mark.parametrize("cut", ["empty", "in_length", "in_header", "in_data", "last_byte"])
def test_truncated_checkpoint_error_names_the_file(tmp_path, cut):
    # proves a checkpoint copied half-way, cut anywhere, gives a one-line error naming the file
    path = ckpt.save(tmp_path, 7, arrays(), meta(7))
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    keep = {"empty": 0, "in_length": 5, "in_header": 8 + n // 2, "in_data": 8 + n + 10, "last_byte": len(raw) - 1}[cut]
    path.write_bytes(raw[:keep])
    with pytest.raises(CheckpointError) as e:
        ckpt.read_safetensors(path)
    msg = str(e.value)
    assert str(path) in msg and "truncated or corrupted" in msg and "\n" not in msg


def test_corrupted_bytes_and_foreign_files_get_clear_errors(tmp_path):
    path = tmp_path / "ckpt-00000001.safetensors"
    path.write_bytes(os.urandom(64))                                   # random garbage
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        ckpt.read_safetensors(path)
    head = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 4)  # a valid safetensors, not tinyar's
    with pytest.raises(CheckpointError, match="not a tinyar checkpoint"):
        ckpt.read_safetensors(path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ckpt.read_safetensors(tmp_path / "missing.safetensors")


class _Payload:
    """Unpickling this would create a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_disguised_as_a_checkpoint_is_refused_without_running_code(tmp_path):
    # proves checkpoints are parsed as safetensors only: a malicious pickle (what torch.load would
    # execute) is reported as corrupted and its code never runs
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-00000001.safetensors"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(CheckpointError):
        ckpt.load(path)
    assert not marker.exists()


def test_checkpoint_for_another_vocabulary_or_config_is_refused_naming_the_file(tmp_path):
    path = ckpt.save(tmp_path, 2, arrays(), meta(2, vocab=300))
    with pytest.raises(CheckpointError, match=rf"{path}.*vocabulary of 300 tokens.*258"):
        ckpt.load(path)
    bad = meta(2)
    bad["config"]["attention_sinks"] = 4                               # written by some other version
    path = ckpt.save(tmp_path, 3, arrays(), bad)
    with pytest.raises(CheckpointError, match=rf"{path}.*unknown config fields \['attention_sinks'\]"):
        ckpt.load(path)


def test_trainer_refuses_tensors_that_do_not_fit_its_config():
    # proves load_state checks names and shapes (the file's config and its tensors disagree)
    # and says so; no training step runs, so nothing is compiled
    from tinygrad.nn.state import get_state_dict
    from tinyar.train import Trainer
    t = Trainer(TINY)
    good = {f"model.{k}": np.zeros(v.shape, np.float32) for k, v in get_state_dict(t.model).items()}
    good |= {f"optim.{k}": np.zeros(v.shape, np.float32) for k, v in get_state_dict(t.opt).items()}
    m = meta(4)
    wide = dict(good, **{"model.tok_emb": np.zeros((258, 32), np.float32)})
    with pytest.raises(ValueError, match=r"model.tok_emb has shape \(258, 32\).*different configuration"):
        t.load_state(wide, m)
    with pytest.raises(ValueError, match="lacks tensor"):
        t.load_state({k: v for k, v in good.items() if k != "model.tok_emb"}, m)
    with pytest.raises(ValueError, match="unexpected tensor model.extra"):
        t.load_state(dict(good, **{"model.extra": np.zeros(1, np.float32)}), m)
    assert t.step == 0                                                 # nothing was half-loaded


def test_keep_prunes_oldest_only_after_the_new_one_is_written(tmp_path):
    for step in (10, 20, 30, 40, 50):
        ckpt.save(tmp_path, step, arrays(), meta(step), keep=2)
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["ckpt-00000040.safetensors", "ckpt-00000050.safetensors"]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        ckpt.save(tmp_path, 60, arrays(), meta(60), keep=0)
    assert len(ckpt.checkpoints(tmp_path)) == 2
