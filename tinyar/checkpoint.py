"""Checkpoints: one safetensors file per save (weights, optimizer moments, and the config,
step and data-RNG state as JSON metadata), written to a temp file and renamed, so a crash
mid-write never replaces a good checkpoint. Only safetensors are ever read (no pickle).
Each tensor carries a checksum (sha256 of its dtype, shape and bytes) that is verified on
load, and NaN/inf weights are refused, so a damaged file is never trained on or sampled.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
import struct
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tinyar.config import Config

DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "U8": np.uint8,
          "BOOL": np.bool_, "F64": np.float64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
PREFIX = "ckpt-"


class CheckpointError(ValueError):
    """A checkpoint can't be read or doesn't fit. The message names the file."""


def checksum(dtype: str, shape: list[int], data) -> str:
    """sha256 of a tensor's dtype, shape and bytes: flipped bytes or a relabelled dtype change it."""
    h = hashlib.sha256(f"{dtype} {list(shape)} ".encode())
    h.update(data)
    return h.hexdigest()


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write arrays + JSON metadata (+ a checksum per tensor) to `path` atomically (temp file in
    the same folder, fsync, rename)."""
    try:
        write_atomic(path, arrays, {"tinyar": json.dumps(meta)})
    except OSError as e:
        raise CheckpointError(f"could not write checkpoint {path}: {e.strerror or e}; the previous "
                              f"checkpoints are untouched (free some space or pick another --out)") from None


def write_atomic(path: Path, arrays: dict[str, np.ndarray], tags: dict[str, str]) -> None:
    """Any safetensors file: `tags` (string metadata) plus "sha256" (a checksum per tensor),
    written to a temp file and renamed, so a reader sees the old file or the whole new one.
    Raises OSError. (`python cli.py export` writes x-transformers' weights with it.)"""
    header, offset, blobs, sums = {}, 0, [], {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype not in NAMES:
            a = a.astype(np.float32)
        blob = a.tobytes()
        header[name] = {"dtype": NAMES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        sums[name] = checksum(NAMES[a.dtype], list(a.shape), blob)
        blobs.append(blob)
        offset += len(blob)
    header["__metadata__"] = tags | {"sha256": json.dumps(sums)}
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


class ChecksumMismatch(ValueError):
    pass


def tensors(header: dict, data: memoryview, sums: dict | None) -> dict[str, np.ndarray]:
    """The arrays a safetensors header (without its metadata) describes in `data`, each checked
    against its sha256 in `sums` when given. BF16 comes back as float32. Raises ValueError
    (ChecksumMismatch for a checksum) when the bytes are not whole and intact."""
    arrays = {}
    for name, h in header.items():
        lo, hi = h["data_offsets"]
        if not 0 <= lo <= hi <= len(data):
            raise ValueError("truncated")
        if sums is not None and sums.get(name) != checksum(h["dtype"], h["shape"], data[lo:hi]):
            raise ChecksumMismatch(f"tensor {name} does not match its checksum")
        if h["dtype"] == "BF16":    # bfloat16 is the top half of a float32
            a = (np.frombuffer(data[lo:hi], np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(data[lo:hi], dtype=DTYPES[h["dtype"]])
        arrays[name] = a.reshape(h["shape"]).copy()
    if max((h["data_offsets"][1] for h in header.values()), default=0) != len(data):
        raise ValueError("size does not match the header")
    return arrays


def parse_safetensors(raw: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Any safetensors file's bytes (x-transformers' weights, say) -> (arrays, string metadata), by
    a plain parser (never pickle). BF16 comes back as float32; a "sha256" tag is verified. Raises
    ValueError if the bytes are not a whole, intact file."""
    if len(raw) < 8 or struct.unpack("<Q", raw[:8])[0] > len(raw) - 8:
        raise ValueError("truncated")
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    if not isinstance(header, dict):
        raise ValueError("not a safetensors header")
    tags = header.pop("__metadata__", None) or {}
    try:
        sums = json.loads(tags["sha256"]) if "sha256" in tags else None
        arrays = tensors(header, memoryview(raw)[8 + n:], sums)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"unreadable header ({e})") from None
    return arrays, tags


COPY = re.compile(r"optim\.(?:optimizers\.\d+\.)?params\.\d+")   # an older file's copies of the weights


def copy_mismatch(arrays: dict[str, np.ndarray]) -> str | None:
    """A file from before checksums stored each weight three times (model.*, optim.optimizers.N.params.M
    and optim.params.M), all equal when written. -> the copy that disagrees with the other two (its
    bytes are the rarest), or None when every weight's bytes come in threes."""
    digest = lambda a: hashlib.sha256(a.dtype.str.encode() + str(a.shape).encode() + a.tobytes()).digest()
    copies = {k: digest(a) for k, a in arrays.items() if k.startswith("model.") or COPY.fullmatch(k)}
    count = Counter(copies.values())
    odd = [k for k, d in copies.items() if count[d] % 3]
    return min(odd, key=lambda k: count[copies[k]]) if odd else None


def fallback(path: Path) -> str:
    """What to do instead of using a bad checkpoint: the one saved before it, if any."""
    earlier = [p for p in checkpoints(path.parent) if p.name < path.name]
    return (f"delete it to fall back to the one before it, {earlier[-1].name}" if earlier else
            f"no earlier checkpoint in {path.parent} to fall back to: train again with --force")


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a tinyar checkpoint with a plain parser (never pickle, so a file can't run code),
    verifying every tensor's checksum; raise CheckpointError naming the file and the fallback if it
    is damaged, holds NaN/inf, or is not tinyar's."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    damaged = lambda why=f"truncated or corrupted ({len(raw)} bytes)": CheckpointError(
        f"checkpoint {path} is {why}; {fallback(path)}")
    if len(raw) < 8 or struct.unpack("<Q", raw[:8])[0] > len(raw) - 8:
        raise damaged()
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8:8 + n])
    except ValueError:
        raise damaged() from None
    if not isinstance(header, dict):
        raise damaged()
    tags = header.pop("__metadata__", None)
    if not isinstance(tags, dict) or "tinyar" not in tags:
        raise CheckpointError(f"{path} is not a tinyar checkpoint (no tinyar metadata); pass a run folder "
                              f"written by `python cli.py train`")
    try:
        meta = json.loads(tags["tinyar"])
        # files from before checksums stored every weight three times (model.*, optim.params.*, ...)
        sums = json.loads(tags["sha256"]) if "sha256" in tags or "optim.params.0" not in header else None
        try:
            arrays = tensors(header, memoryview(raw)[8 + n:], sums)
        except ChecksumMismatch as e:
            raise damaged(f"damaged: {e}") from None
        if sums is not None and set(sums) != set(header):
            raise damaged(f"damaged: {len(header)} tensors, {len(sums)} checksums")
        if sums is None and (odd := copy_mismatch(arrays)):
            raise damaged(f"damaged: {odd} differs from the other copies of the weights (it predates checksums; "
                          f"each weight is stored three times)")
        if not (isinstance(meta, dict) and {"config", "step", "rng"} <= set(meta)):
            raise ValueError("metadata lacks config, step or rng")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise (e if isinstance(e, CheckpointError) else damaged()) from None
    for name, a in arrays.items():
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            bad = a[~np.isfinite(a)].flat[0]
            raise damaged(f"unusable: {name} holds {'NaN' if math.isnan(bad) else bad} (saved from a run that "
                          f"diverged?)")
    return arrays, meta


def has_checksums(path: Path) -> bool:
    """Whether the file carries a checksum per tensor (files from before checksums don't)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return "sha256" in json.loads(f.read(n)).get("__metadata__", {})
    except (OSError, ValueError, struct.error, AttributeError):
        return False


def load(path: Path) -> tuple[Config, dict[str, np.ndarray], dict]:
    """Read a checkpoint and its Config. -> (cfg, arrays, meta); CheckpointError names the file."""
    from tinyar.config import Config, ConfigError
    from tinyar.data import VOCAB
    arrays, meta = read_safetensors(path)
    try:
        cfg = Config.from_dict(meta["config"]).validate()
    except (ConfigError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} holds an unusable config ({e}); {fallback(path)}") from None
    if type(meta["step"]) is not int or meta["step"] < 0:
        raise CheckpointError(f"checkpoint {path} holds step {meta['step']!r}, not a count of steps; "
                              f"{fallback(path)}")
    if cfg.vocab != VOCAB:
        raise CheckpointError(f"checkpoint {path} was written for a vocabulary of {cfg.vocab} tokens; tinyar's "
                              f"byte vocabulary has {VOCAB}, so it can't be resumed or sampled")
    return cfg, arrays, meta


def folder_problem(path: Path, option: str) -> str | None:
    """Why `path`, given as a run folder (`option`: how the user gave it), can't be one: a symbolic
    link loop, or a file (a checkpoint: name its folder). None if it is a folder or does not exist."""
    who = f"{option} {path}".strip()
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno != errno.ELOOP:
            return None
        return f"{who} is a symbolic link loop (it leads back to itself); remove it (rm {path}) or give the real folder"
    if stat.S_ISDIR(mode):
        return None
    fix = (f"give the folder that holds it, {Path(path).parent}" if Path(path).name.startswith(PREFIX) else
           "give a run folder (the --out of an earlier train)")
    return f"{who} is a file, not a run folder; {fix}"


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
