"""Byte-level tokens and a memory-mapped corpus that yields random (B, T+1) windows.

Ids 0..255 are the bytes themselves; MASK and PAD come after them, so any file is a corpus.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import numpy as np

MASK = 256        # replaces an input token under `replace` masking
PAD = 257         # targets equal to PAD are ignored by every loss
VOCAB = 258       # 256 bytes + MASK + PAD
VAL_FRACTION = 0.1


class CorpusError(ValueError):
    """The corpus can't be used. The message says why and what to do."""


def encode(text: str | bytes) -> np.ndarray:
    """Text (UTF-8) or bytes -> uint8 token ids, one per byte."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).copy()


def decode(ids) -> str:
    """Token ids -> text. MASK/PAD are dropped; invalid UTF-8 becomes U+FFFD."""
    arr = np.asarray(ids).reshape(-1)
    return bytes(int(i) for i in arr if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def default_corpus(max_bytes: int = 4_000_000) -> bytes:
    """The running interpreter's own standard-library sources: top-level modules, sorted by
    name, concatenated up to `max_bytes`. Present on every Python install, so no download."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, size = [], 0
    for path in sorted(root.glob("*.py")):
        chunk = path.read_bytes()
        if size + len(chunk) > max_bytes:
            break
        out.append(chunk)
        size += len(chunk)
    if not out:
        raise CorpusError(f"no Python sources found under {root}; pass a corpus file instead")
    return b"".join(out)


class Corpus:
    """Token ids (uint8) split into train (first 90%) and validation (last 10%) parts.

    A path is memory-mapped, so a corpus larger than RAM only pages in the windows it samples.
    """

    def __init__(self, source: str | os.PathLike | bytes | np.ndarray, seq_len: int, name: str | None = None):
        if isinstance(source, (bytes, bytearray, np.ndarray)):
            ids = np.frombuffer(bytes(source), np.uint8) if not isinstance(source, np.ndarray) else source.astype(np.uint8)
            self.name = name or "<memory>"
        else:
            path = Path(source)
            self.name = name or str(path)
            if path.is_dir():
                raise CorpusError(f"{path} is a directory; pass a file")
            if not path.exists():
                raise CorpusError(f"corpus {path} does not exist; check the path")
            try:
                size = path.stat().st_size
                with open(path, "rb"):
                    pass
            except OSError as e:
                raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
            ids = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
        need = 2 * (seq_len + 2)
        if len(ids) < need:
            raise CorpusError(f"corpus {self.name} has {len(ids)} bytes; with --seq-len {seq_len} it needs at "
                              f"least {need} (a training and a validation window): use a longer file or a "
                              f"smaller --seq-len")
        self.seq_len = seq_len
        n_val = max(int(len(ids) * VAL_FRACTION), seq_len + 2)
        self.train, self.val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]

    def __len__(self) -> int:
        return len(self.train) + len(self.val)

    def batch(self, rng: np.random.Generator, batch_size: int, split: str = "train") -> np.ndarray:
        """B random windows of T+1 consecutive tokens. -> (B, T+1) int32"""
        ids = self.train if split == "train" else self.val
        starts = rng.integers(0, len(ids) - self.seq_len, size=batch_size)
        idx = starts[:, None] + np.arange(self.seq_len + 1)[None, :]
        return np.asarray(ids[idx], dtype=np.int32)

    def val_batches(self, n: int, batch_size: int) -> list[np.ndarray]:
        """A fixed set of validation windows (same every evaluation, so numbers compare)."""
        rng = np.random.default_rng(12345)
        return [self.batch(rng, batch_size, "val") for _ in range(n)]
