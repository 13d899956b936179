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


# ── damage is detected, each tensor stored once (issue: twenty flipped bytes loaded silently) ──

def trainer_state():
    """A TINY trainer's real checkpoint arrays (no step runs, so nothing compiles)."""
    from tinyar.train import Trainer
    t = Trainer(TINY)
    return t, t.state_arrays()


def test_each_tensor_is_stored_once():
    # proves the optimizer's references to the weights are not saved again: a checkpoint holds
    # the weights once plus AdamW's two moments per weight and its three scalars per group
    from tinygrad.nn.state import get_state_dict
    t, arrays = trainer_state()
    weights = sum(v.nbytes for k, v in arrays.items() if k.startswith("model."))
    assert weights == sum(v.numpy().nbytes for v in get_state_dict(t.model).values())
    assert sum(a.nbytes for a in arrays.values()) == 3 * weights + 2 * 3 * 4     # m, v; lr, b1_t, b2_t (f32)
    assert not any(".params." in k or k.startswith("optim.params") for k in arrays)


def test_flipped_bytes_or_a_relabelled_dtype_are_refused_naming_the_file_and_the_fallback(tmp_path):
    _, good = trainer_state()
    before = ckpt.save(tmp_path, 10, good, meta(10))
    path = ckpt.save(tmp_path, 20, good, meta(20))
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    for i in np.random.default_rng(0).choice(np.arange(start, len(raw)), 20, replace=False):
        raw[i] ^= 0xFF                                                   # twenty flipped bytes in tensor data
    path.write_bytes(bytes(raw))
    for load in (ckpt.read_safetensors, ckpt.load):
        with pytest.raises(CheckpointError) as e:
            load(path)
        msg = str(e.value)
        assert f"checkpoint {path} is damaged: tensor " in msg and "does not match its checksum" in msg
        assert f"fall back to the one before it, {before.name}" in msg and "\n" not in msg
    # model.tok_emb relabelled F32 -> I32 (same bytes, same header length): caught too
    path = ckpt.save(tmp_path, 20, good, meta(20))
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["model.tok_emb"]["dtype"] = "I32"
    relabelled = json.dumps(header).encode().ljust(n)
    assert len(relabelled) == n
    path.write_bytes(raw[:8] + relabelled + raw[8 + n:])
    with pytest.raises(CheckpointError, match=r"tensor model\.tok_emb does not match its checksum"):
        ckpt.read_safetensors(path)


def test_a_file_without_checksums_or_with_one_missing_is_damaged(tmp_path):
    path = ckpt.save(tmp_path, 3, arrays(), meta(3))
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    for change in ("drop all", "drop one"):
        h = json.loads(json.dumps(header))
        if change == "drop all":
            del h["__metadata__"]["sha256"]
        else:
            h["__metadata__"]["sha256"] = json.dumps({"model.w": json.loads(header["__metadata__"]["sha256"])["model.w"]})
        head = json.dumps(h).encode()
        path.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n:])
        with pytest.raises(CheckpointError, match=f"checkpoint {path} is .*no earlier checkpoint"):
            ckpt.read_safetensors(path)


def test_nan_or_inf_weights_are_refused_on_load(tmp_path):
    # proves a checkpoint holding NaN/inf (written by an older version, or edited) is never
    # trained on or sampled: both read it through read_safetensors
    for bad in (np.nan, np.inf):
        a = arrays()
        a["model.w"][1, 2] = bad
        path = ckpt.save(tmp_path, 4, a, meta(4))
        with pytest.raises(CheckpointError) as e:
            ckpt.load(path)
        assert f"checkpoint {path} is unusable: model.w holds {'NaN' if np.isnan(bad) else 'inf'}" in str(e.value)


def legacy_file(path, arrays: dict, meta: dict):
    """A checkpoint as tinyar wrote it before checksums: no sha256 metadata, and every weight also
    stored as the optimizer's optim.optimizers.N.params.M and optim.params.M."""
    header, blobs, offset = {"__metadata__": {"tinyar": json.dumps(meta)}}, [], 0
    for name, a in arrays.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_an_older_checkpoint_still_loads_and_a_damaged_one_is_caught_by_its_copies(tmp_path):
    # proves old run folders stay usable, and that an old file's damage is still found: it has no
    # checksums, but stored each weight three times (model.*, optim.optimizers.N.params.M,
    # optim.params.M), all equal when written, so one flipped bit leaves the copies disagreeing
    from tinygrad.nn.state import get_state_dict
    t, arrays = trainer_state()
    arrays = {k: a + 0.5 for k, a in arrays.items()}                    # not the fresh trainer's values
    model_name = {id(v): f"model.{k}" for k, v in get_state_dict(t.model).items()}
    old = dict(arrays)
    for k, v in get_state_dict(t.opt).items():                        # the copies, as old tinyar wrote them
        if id(v) in model_name:
            old[f"optim.{k}"] = arrays[model_name[id(v)]].copy()
    assert len(old) == len(arrays) + 2 * len(model_name) and "optim.optimizers.1.params.0" in old
    path = tmp_path / "ckpt-00000004.safetensors"
    legacy_file(path, old, meta(4))
    got, m = ckpt.read_safetensors(path)
    t.load_state(got, m)
    assert all(np.array_equal(v.numpy(), arrays[f"model.{k}"]) for k, v in get_state_dict(t.model).items())
    assert t.step == 4 and not ckpt.has_checksums(path)
    for name in ("model.tok_emb", "optim.params.3", "optim.optimizers.0.params.1"):
        bad = dict(old)
        bad[name] = bad[name].copy()
        bad[name].view(np.uint8)[5] ^= 1                                  # one flipped bit, still finite
        legacy_file(path, bad, meta(4))
        with pytest.raises(CheckpointError, match=rf"{path} is damaged: {name} differs from the other copies"):
            ckpt.read_safetensors(path)


def test_trainer_refuses_a_tensor_of_the_wrong_dtype():
    t, good = trainer_state()
    with pytest.raises(ValueError, match=r"model\.tok_emb is int32, the model needs float32"):
        t.load_state(dict(good, **{"model.tok_emb": good["model.tok_emb"].view(np.int32)}), meta(4))
    assert t.step == 0
