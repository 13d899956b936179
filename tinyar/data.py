"""Byte-level tokens and a memory-mapped corpus that yields random (B, T+1) windows.

Ids 0..255 are the bytes themselves; MASK and PAD come after them, so any file is a corpus.
"""
from __future__ import annotations

import glob
import mmap
import os
import stat
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


class Files:
    """Several files read as one 1-D uint8 array, without loading them.

    Supports len(), slices (lazy views) and integer-array indexing, which reads just the
    requested bytes with os.pread. No file stays open and nothing is mapped, so a folder of
    thousands of files costs no memory, no descriptors and no mmaps. (One file is simply
    memory-mapped instead, see `open_bytes`.)"""

    def __init__(self, paths: list[Path], offsets: np.ndarray | None = None, lo: int = 0, hi: int | None = None):
        self.paths = paths
        # file i holds bytes offsets[i] .. offsets[i+1]-1 of the concatenation
        self.offsets = np.cumsum([0] + [p.stat().st_size for p in paths]) if offsets is None else offsets
        self.lo, self.hi = lo, int(self.offsets[-1]) if hi is None else hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            assert step == 1, "Files supports contiguous slices only"
            return Files(self.paths, self.offsets, self.lo + start, self.lo + max(start, stop))
        idx = np.asarray(key, dtype=np.int64)
        flat = np.where(idx < 0, idx + len(self), idx).reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError("index out of range")
        flat = flat + self.lo
        order = np.argsort(flat, kind="stable")
        pos, out = flat[order], np.empty(flat.size, np.uint8)
        # read each run of (nearly) consecutive positions once: a batch of windows is B runs
        cuts = np.flatnonzero(np.diff(pos) > 1) + 1
        for run in np.split(np.arange(pos.size), cuts):
            if run.size:
                first, last = int(pos[run[0]]), int(pos[run[-1]])
                buf = np.frombuffer(self._read(first, last - first + 1), np.uint8)
                out[order[run]] = buf[pos[run] - first]
        return out.reshape(idx.shape)

    def _read(self, start: int, n: int) -> bytes:
        chunks, i = [], int(np.searchsorted(self.offsets, start, side="right")) - 1
        while n > 0:
            path, at = self.paths[i], start - int(self.offsets[i])
            want = min(n, int(self.offsets[i + 1]) - start)
            with open(path, "rb") as f:
                got = os.pread(f.fileno(), want, at)
            if len(got) != want:
                raise CorpusError(f"corpus file {path} shrank while training; restore it or restart the run")
            chunks.append(got)
            start, n, i = start + want, n - want, i + 1
        return b"".join(chunks)

    def __array__(self, dtype=None, copy=None):  # reads everything: for small corpora and tests
        a = self[np.arange(len(self))]
        return a if dtype is None else a.astype(dtype)


KINDS = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket"}


def _regular(paths: list[Path], spec) -> list[Path]:
    """The regular files among paths; directories and broken links are passed over, anything
    else (a FIFO would block the first read forever) is refused."""
    found = []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue   # a broken symbolic link
        except OSError as e:
            raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
        if stat.S_ISREG(mode):
            found.append(path)
        elif not stat.S_ISDIR(mode):
            where = "" if path == Path(spec) else f" (in corpus {spec})"
            raise CorpusError(f"corpus {path}{where} is {KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not "
                              f"a file; to train on a stream, pipe it in: cat {path} | python cli.py train -")
    return found


def _folder_files(root: Path) -> list[Path]:
    """Every file below root (hidden files and folders, like .git, skipped), sorted. A subfolder
    that can't be read is an error, not a silent gap in the corpus."""
    def refuse(e: OSError):
        raise CorpusError(f"cannot read folder {e.filename} in corpus {root}: {e.strerror}; make it readable "
                          f"(chmod -R u+rX) or move it out of the corpus")
    found = []
    for folder, dirs, names in os.walk(root, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, n) for n in names if not n.startswith(".")]
    return _regular(sorted(found), root)


def _check_listable(pattern: str) -> None:
    """glob passes over folders it can't read without a word; refuse them, as a folder corpus does.
    Checked: every folder the pattern looks into below its first wildcard (all below, for **)."""
    parts = Path(pattern).parts
    start = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    for i in range(max(start, 1), len(parts)):
        upto = parts[:i + 1] if parts[i] == "**" else parts[:i]
        for folder in glob.glob(str(Path(*upto)), recursive=True):
            try:
                if os.path.isdir(folder):
                    os.scandir(folder).close()
            except OSError as e:
                raise CorpusError(f"cannot read folder {folder} in corpus pattern {pattern!r}: {e.strerror}; make "
                                  f"it readable (chmod -R u+rX) or narrow the pattern") from None


def corpus_files(specs: list[str | os.PathLike]) -> list[Path]:
    """Files a list of corpus arguments names, in order: a file is itself; a directory is every
    file below it (hidden ones like .git skipped), sorted by path; a glob pattern ('data/*.txt',
    'src/**/*.py') is its matches, sorted. Raises CorpusError naming a spec that gives nothing,
    an unreadable file or subfolder, or a FIFO, device or socket."""
    files = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = _folder_files(path)
            if not found:
                raise CorpusError(f"corpus directory {path} holds no files; put text files in it or pass a file")
        elif path.exists() or not any(c in str(spec) for c in "*?["):
            if not path.exists():
                raise CorpusError(f"corpus {path} does not exist; check the path")
            found = _regular([path], spec)
        else:
            _check_listable(str(spec))
            found = _regular(sorted(Path(p) for p in glob.glob(str(spec), recursive=True)), spec)
            if not found:
                raise CorpusError(f"no files match the corpus pattern {spec!r}; check the pattern")
        files += found
    for path in files:
        try:   # non-blocking: should the file have become a FIFO since, the open can't hang
            os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        except OSError as e:
            raise CorpusError(f"cannot read corpus {path}: {e.strerror}") from None
    return files


def open_bytes(files: list[Path]):
    """One file -> a read-only memory map (pages load only when a window touches them);
    several -> a `Files` concatenation. Either acts as a 1-D uint8 array."""
    if len(files) > 1:
        return Files(files)
    if not files[0].stat().st_size:
        return np.zeros(0, np.uint8)
    with open(files[0], "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(m, "madvise"):  # windows are random: read ahead nothing (else each window pulls in ~MBs)
        m.madvise(mmap.MADV_RANDOM)
    return np.frombuffer(m, np.uint8)


def copy_stream(stream, dest: Path, chunk: int = 1 << 20) -> Path:
    """Copy a byte stream (e.g. stdin) to `dest` chunk by chunk, so a piped corpus of any size
    becomes a file that can be memory-mapped (and found again when the run is resumed)."""
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            while block := stream.read(chunk):
                f.write(block)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


class Corpus:
    """Token ids (uint8) split into train (first 90%) and validation (last 10%) parts.

    `source` is bytes / an array, or a path, directory or glob (or a list of them) read as
    one concatenated byte stream. Files are never read whole: one file is memory-mapped,
    several are read window by window, so a corpus larger than RAM works.
    """

    def __init__(self, source, seq_len: int, name: str | None = None):
        if isinstance(source, (bytes, bytearray, np.ndarray)):
            ids = np.frombuffer(bytes(source), np.uint8) if not isinstance(source, np.ndarray) else source.astype(np.uint8)
            self.files, self.name = [], name or "<memory>"
        else:
            specs = list(source) if isinstance(source, (list, tuple)) else [source]
            self.files = corpus_files(specs)
            ids = open_bytes(self.files)
            self.name = name or (str(self.files[0]) if len(self.files) == 1 else
                                 f"{len(self.files)} files ({', '.join(map(str, specs))})")
        need = 2 * (seq_len + 2)
        if len(ids) < need:
            fits = len(ids) // 2 - 2  # the longest --seq-len this corpus allows
            raise CorpusError(f"corpus {self.name} has {len(ids)} bytes; with --seq-len {seq_len} it needs at "
                              f"least {need} (a training and a validation window): use a longer file"
                              + (f" or --seq-len {fits} or less" if fits >= 2 else ""))
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
