"""Checkpoints: one safetensors file per save (weights, optimizer moments, and the config,
step and data-RNG state as JSON metadata), written to a temp file and renamed, so a crash
mid-write never replaces a good checkpoint. Only safetensors are ever read (no pickle).
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "U8": np.uint8,
          "BOOL": np.bool_, "F64": np.float64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
PREFIX = "ckpt-"


class CheckpointError(ValueError):
    """A checkpoint can't be read or doesn't fit. The message names the file."""


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays + JSON metadata to `path` atomically (temp file in the same folder, fsync, rename)."""
    try:
        write_atomic(path, arrays, {"tinyar": json.dumps(meta)})
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; the previous "
                              f"checkpoints are untouched (free some space or pick another --out)") from None


def write_atomic(path: Path, arrays: dict[str, np.ndarray], tags: dict[str, str]) -> None:
    """Any safetensors file (`tags`: its string metadata), written to a temp file and renamed,
    so a reader sees the old file or the whole new one. Raises OSError."""
    header, offset, blobs = {"__metadata__": tags}, 0, []
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in NAMES:
            a = a.astype(np.float32)
        blob = a.tobytes()
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(head)) + head)
            for blob in blobs:
                f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut right after it can't undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_safetensors(raw: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Any safetensors file's bytes -> (arrays, string metadata), by a plain parser (never pickle).
    BF16 arrays come back as float32. Raises ValueError if the bytes are not a whole file."""
    if len(raw) < 8 or struct.unpack("<Q", raw[:8])[0] > len(raw) - 8:
        raise ValueError("truncated")
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("not a safetensors header")
    tags = header.pop("__metadata__", None) or {}
    data, arrays = memoryview(raw)[8 + n:], {}
    try:
        for name, h in header.items():
            lo, hi = h["data_offsets"]
            if not 0 <= lo <= hi <= len(data):
                raise ValueError("truncated")
            if h["dtype"] == "BF16":    # bfloat16 is the top half of a float32
                a = (np.frombuffer(data[lo:hi], np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(data[lo:hi], dtype=DTYPES[h["dtype"]])
            arrays[name] = a.reshape(h["shape"]).copy()
        if max((h["data_offsets"][1] for h in header.values()), default=0) != len(data):
            raise ValueError("size does not match the header")
    except (KeyError, TypeError) as e:
        raise ValueError(f"unreadable header ({e})") from None
    return arrays, tags


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a tinyar checkpoint with a plain parser (never pickle, so a file can't run code);
    raise CheckpointError naming the file if it is damaged or not tinyar's."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    damaged = CheckpointError(f"checkpoint {path} is truncated or corrupted ({len(raw)} bytes); delete it to "
                              f"fall back to an earlier one")
    try:
        arrays, tags = parse_safetensors(raw)
    except ValueError:
        raise damaged from None
    if not isinstance(tags, dict) or "tinyar" not in tags:
        raise CheckpointError(f"{path} is not a tinyar checkpoint (no tinyar metadata); pass a run folder "
                              f"written by `python cli.py train`")
    try:
        meta = json.loads(tags["tinyar"])
        if not (isinstance(meta, dict) and {"config", "step", "rng"} <= set(meta)):
            raise ValueError("metadata lacks config, step or rng")
    except (ValueError, TypeError):
        raise damaged from None
    return arrays, meta


def load(path: Path) -> tuple["Config", dict[str, np.ndarray], dict]:
    """Read a checkpoint and its Config. -> (cfg, arrays, meta); CheckpointError names the file."""
    from tinyar.config import Config, ConfigError
    from tinyar.data import VOCAB
    arrays, meta = read_safetensors(path)
    try:
        cfg = Config.from_dict(meta["config"])
    except (ConfigError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} holds an unusable config: {e}") from None
    if cfg.vocab != VOCAB:
        raise CheckpointError(f"checkpoint {path} was written for a vocabulary of {cfg.vocab} tokens; tinyar's "
                              f"byte vocabulary has {VOCAB}, so it can't be resumed or sampled")
    return cfg, arrays, meta


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted(Path(run_dir).glob(f"{PREFIX}*.safetensors"))


def latest(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save(run_dir: Path, step: int, arrays: dict[str, np.ndarray], meta: dict, keep: int = 3) -> Path:
    """Write ckpt-<step>.safetensors into run_dir, then delete all but the newest `keep` (>= 1).
    Old checkpoints are removed only after the new one is safely on disk."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (got {keep})")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{PREFIX}{step:08d}.safetensors"
    write_safetensors(path, arrays, meta)
    for old in checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path
