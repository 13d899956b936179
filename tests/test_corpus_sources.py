"""Corpora beyond one small file: folders, globs, many files, binary data, larger than memory.

Nothing is trained here (no tinygrad kernels), so these run in seconds.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tinyar.data import Corpus, CorpusError, Files, copy_stream, corpus_files

T = 8


def concatenation(paths):
    return np.frombuffer(b"".join(Path(p).read_bytes() for p in paths), np.uint8)


def check_windows(c: Corpus, full: np.ndarray):
    """Every batch row must be T+1 consecutive bytes of `full` inside its own split."""
    n_train = len(c.train)
    rng = np.random.default_rng(0)
    for split, lo, hi in (("train", 0, n_train), ("val", n_train, len(full))):
        for _ in range(20):
            x = c.batch(rng, 4, split)
            assert x.shape == (4, T + 1) and x.dtype == np.int32
            for w in x.astype(np.uint8):
                hits = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(full[lo:hi], T + 1) == w, axis=1))
                assert hits.size, f"a {split} window is not a run of corpus bytes"


def test_a_folder_is_every_file_below_it_in_sorted_order(tmp_path):
    # proves a directory is one corpus: all files below it (nested too), sorted by path, hidden
    # ones (.git) skipped, read as one byte stream; windows may cross file boundaries
    d = tmp_path / "notes"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    files = {"b.txt": b"bbbbbbbbbb second file\n", "a.txt": b"the first file, a\n",
             "sub/c.md": b"# nested third\n", ".hidden": b"HIDDEN", ".git/HEAD": b"ref: HEAD"}
    for name, data in files.items():
        (d / name).write_bytes(data)
    expect = [d / "a.txt", d / "b.txt", d / "sub" / "c.md"]
    assert corpus_files([d]) == expect
    c = Corpus(d, T)
    full = concatenation(expect)
    assert len(c) == len(full) and b"HIDDEN" not in full.tobytes()
    np.testing.assert_array_equal(np.concatenate([np.asarray(c.train), np.asarray(c.val)]), full)
    check_windows(c, full)


def test_an_unreadable_subfolder_is_refused_not_skipped(tmp_path, monkeypatch):
    # proves a folder corpus never trains on part of itself without a word: a subfolder that
    # can't be listed is an error naming it (as root, permissions don't apply: the listing is
    # made to fail the way it fails for a user)
    d = tmp_path / "notes"
    (d / "locked").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"readable text " * 10)
    (d / "locked" / "b.txt").write_bytes(b"secret text " * 10)
    if os.geteuid() == 0:
        real = os.scandir
        def scandir(path="."):
            if Path(path) == d / "locked":
                raise PermissionError(13, "Permission denied", str(path))
            return real(path)
        monkeypatch.setattr(os, "scandir", scandir)
    (d / "locked").chmod(0)
    try:
        with pytest.raises(CorpusError) as e:
            Corpus(d, T)
    finally:
        (d / "locked").chmod(0o755)
    msg = str(e.value)
    assert f"cannot read folder {d / 'locked'} in corpus {d}: Permission denied" in msg and "chmod" in msg
    # a glob pattern is refused the same way (glob.glob itself passes over what it can't list)
    (d / "locked").chmod(0)
    try:
        for pattern in (d / "**" / "*.txt", d / "*" / "*.txt", tmp_path / "*" / "*" / "b.txt"):
            with pytest.raises(CorpusError) as e:
                Corpus(str(pattern), T)
            assert str(e.value) == (f"cannot read folder {d / 'locked'} in corpus pattern {str(pattern)!r}: Permission "
                                    f"denied; make it readable (chmod -R u+rX) or narrow the pattern")
        assert corpus_files([str(d / "*.txt")]) == [d / "a.txt"]       # a pattern that lists no locked folder
    finally:
        (d / "locked").chmod(0o755)


@pytest.fixture
def no_hang():
    """Fail instead of hanging: a blocked open() is interrupted by SIGALRM after 60 s."""
    def alarm(signum, frame):
        raise TimeoutError("hung on a corpus path")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_is_refused_at_once_alone_or_in_a_folder(tmp_path, no_hang):
    # proves a named pipe with no writer (opening it would wait forever) gets a one-line error
    # that says how to stream a corpus instead (`-`, which train copies into the run folder)
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_bytes(b"some text " * 10)
    os.mkfifo(d / "pipe")
    for spec, where in ((d / "pipe", ""), (d, f" (in corpus {d})"), (str(d / "*"), f" (in corpus {d / '*'})")):
        with pytest.raises(CorpusError) as e:
            Corpus(spec, T)
        assert str(e.value) == (f"corpus {d / 'pipe'}{where} is a named pipe (FIFO), not a file; to train on a "
                                f"stream, pipe it in: cat {d / 'pipe'} | python cli.py train -")


def test_a_glob_pattern_and_several_arguments(tmp_path):
    # proves 'dir/*.txt' (quoted, so tinyar expands it, sorted) and a list of arguments (kept in
    # the order given, as after the shell expanded a glob) both work
    for i in (3, 1, 2):
        (tmp_path / f"part{i}.txt").write_bytes(f"part {i} ".encode() * 5)
    (tmp_path / "skip.bin").write_bytes(b"\0" * 50)
    pattern = str(tmp_path / "*.txt")
    expect = [tmp_path / f"part{i}.txt" for i in (1, 2, 3)]
    assert corpus_files([pattern]) == expect
    c = Corpus(pattern, T)
    np.testing.assert_array_equal(np.asarray(c.train), concatenation(expect)[:len(c.train)])
    check_windows(c, concatenation(expect))
    given = [tmp_path / "part2.txt", tmp_path / "part1.txt"]
    assert corpus_files(given) == given
    with pytest.raises(CorpusError, match=r"no files match the corpus pattern .*\*\.nothing"):
        Corpus(str(tmp_path / "*.nothing"), T)


def test_thousands_of_files_keep_no_file_open_and_read_the_right_bytes(tmp_path):
    # proves a folder of many files is read window by window: no descriptor stays open (a
    # memory map per file would hit the open-file limit) and gathered bytes equal the
    # concatenation at random positions, including windows spanning several tiny files
    rng = np.random.default_rng(1)
    blobs = [rng.integers(0, 256, rng.integers(0, 12), dtype=np.uint8).tobytes() for _ in range(3000)]
    for i, b in enumerate(blobs):
        (tmp_path / f"{i:05d}.bin").write_bytes(b)
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    c = Corpus(tmp_path, T)
    full = np.frombuffer(b"".join(blobs), np.uint8)
    assert isinstance(c.train, Files) and len(c) == len(full)
    idx = rng.integers(0, len(c.train), (64, T + 1))
    np.testing.assert_array_equal(c.train[idx], full[idx])
    c.batch(rng, 16)
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) <= fds_before   # none left open
    check_windows(c, full)


def test_binary_bytes_are_tokens(tmp_path):
    # proves a non-text file works: every byte value 0..255 appears as a token id
    data = bytes(range(256)) * 8
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    c = Corpus(path, T)
    seen = np.unique(np.concatenate([c.batch(np.random.default_rng(s), 64) for s in range(20)]))
    assert seen.min() == 0 and seen.max() == 255 and len(seen) == 256


def test_stdin_is_copied_in_chunks_then_mapped(tmp_path):
    # proves a piped corpus is streamed to a file (chunk by chunk, never one big read), which
    # then works like any corpus file
    class Stream:
        def __init__(self, data):
            self.data, self.reads = data, []

        def read(self, n):
            self.reads.append(n)
            chunk, self.data = self.data[:n], self.data[n:]
            return chunk
    s = Stream(b"piped text " * 1000)
    path = copy_stream(s, tmp_path / "stdin.bin", chunk=4096)
    assert path.read_bytes() == b"piped text " * 1000 and max(s.reads) == 4096
    assert len(Corpus(path, T)) == 11000


def test_a_corpus_larger_than_memory_is_never_read_whole(tmp_path):
    # proves memory-mapping: a 6 GiB sparse file (one file, and a folder of two 3 GiB files)
    # trains-batches with peak RSS far below its size. Run in a fresh process so the peak
    # belongs to this work alone; a whole read (np.fromfile, read_bytes) would need > 6 GiB.
    big = tmp_path / "big.bin"
    folder = tmp_path / "parts"
    folder.mkdir()
    script = textwrap.dedent(f"""
        import os, numpy as np
        from tinyar.data import Corpus
        GiB, marker = 1 << 30, b"tinyar-marker!"
        with open({str(big)!r}, "wb") as f:      # sparse: no disk blocks, reads as zeros
            f.truncate(6 * GiB)
            f.seek(3 * GiB); f.write(marker)
        for name in ("a.bin", "b.bin"):
            with open(os.path.join({str(folder)!r}, name), "wb") as f:
                f.truncate(3 * GiB)
        for source in ({str(big)!r}, {str(folder)!r}):
            c = Corpus(source, 8)
            assert len(c) == 6 * GiB, len(c)
            rng = np.random.default_rng(0)
            for _ in range(200):
                assert c.batch(rng, 16).shape == (16, 9)
            c.val_batches(4, 16)
        c = Corpus({str(big)!r}, 8)
        at = np.arange(3 * GiB, 3 * GiB + len(marker))
        assert bytes(np.asarray(c.train[at], np.uint8)) == marker
        # VmHWM: this process's own peak (ru_maxrss would start from the parent pytest's, Linux keeps it across exec)
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(int(hwm.split()[1]) // 1024)   # KiB -> MiB
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    peak_mib = int(res.stdout.split()[-1])
    assert peak_mib < 1024, f"peak RSS {peak_mib} MiB for a 6 GiB corpus"   # a whole read needs > 6144
