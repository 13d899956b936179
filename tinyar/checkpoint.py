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
    header, offset, blobs = {"__metadata__": {"tinyar": json.dumps(meta)}}, 0, []
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
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a tinyar checkpoint; raise CheckpointError naming the file if it is damaged."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = json.loads(header.pop("__metadata__")["tinyar"])
        data, arrays = memoryview(raw)[8 + n:], {}
        for name, h in header.items():
            lo, hi = h["data_offsets"]
            if hi > len(data):
                raise ValueError("truncated")
            arrays[name] = np.frombuffer(data[lo:hi], dtype=DTYPES[h["dtype"]]).reshape(h["shape"]).copy()
    except (ValueError, KeyError, TypeError, struct.error, json.JSONDecodeError):
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted; delete it to fall back to an "
                              f"earlier one") from None
    return arrays, meta


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted(Path(run_dir).glob(f"{PREFIX}*.safetensors"))


def latest(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def save(run_dir: Path, step: int, arrays: dict[str, np.ndarray], meta: dict, keep: int = 3) -> Path:
    """Write ckpt-<step>.safetensors into run_dir and keep only the newest `keep`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"{PREFIX}{step:08d}.safetensors"
    write_safetensors(path, arrays, meta)
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink()
    return path
