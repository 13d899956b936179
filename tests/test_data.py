"""Byte tokens and the corpus: what counts as a corpus, and the errors for what doesn't."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from tinyar.data import MASK, PAD, Corpus, CorpusError, decode, encode

T = 8


def test_encode_decode_round_trip_one_token_per_byte():
    # proves tokens are the UTF-8 bytes themselves (multi-byte characters give several ids)
    text = "naïve 日本 ✓\n"
    ids = encode(text)
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, np.frombuffer(text.encode("utf-8"), np.uint8))
    assert decode(ids) == text and decode(encode(b"\x00\xff")) == "\x00\ufffd"


def test_decode_invalid_utf8_gives_replacement_chars_and_drops_specials():
    # proves decoding never fails: invalid bytes become U+FFFD, MASK and PAD are left out
    assert decode([0x41, 0xFF, 0x42]) == "A\ufffdB"
    assert decode([0xE6, 0x97]) == "\ufffd"                    # a cut-off 3-byte character
    assert decode([0x68, MASK, 0x69, PAD]) == "hi"


def _needed(seq_len: int, tmp_path) -> int:
    """The length the 'too short' message asks for, read from the message itself."""
    path = tmp_path / "short.txt"
    path.write_bytes(b"x" * (seq_len + 1))
    with pytest.raises(CorpusError) as e:
        Corpus(path, seq_len)
    numbers = [int(n) for n in re.findall(r"at least (\d+)", str(e.value))]
    assert numbers, f"message does not say how long the corpus must be: {e.value}"
    return numbers[0]


def test_too_short_corpus_says_the_required_length_and_that_length_works(tmp_path):
    # proves the 'too short' error names a length that is really the boundary (>= seq_len + 2
    # bytes, so at least one window of T+1 tokens fits): one byte less fails, that many works
    need = _needed(T, tmp_path)
    assert need >= T + 2
    path = tmp_path / "edge.txt"
    path.write_bytes(b"y" * (need - 1))
    with pytest.raises(CorpusError, match=str(need)):
        Corpus(path, T)
    path.write_bytes(b"y" * need)
    c = Corpus(path, T)
    assert c.batch(np.random.default_rng(0), 3).shape == (3, T + 1)
    assert c.batch(np.random.default_rng(0), 3, "val").shape == (3, T + 1)


def test_missing_directory_and_empty_corpus_errors_name_the_problem(tmp_path):
    # proves each bad path gives a CorpusError (a ValueError) naming the file and the problem
    with pytest.raises(CorpusError, match=r"nope\.txt.*does not exist"):
        Corpus(tmp_path / "nope.txt", T)
    with pytest.raises(CorpusError, match="directory"):
        Corpus(tmp_path, T)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(CorpusError, match=r"0 bytes.*at least \d+"):
        Corpus(empty, T)
    assert issubclass(CorpusError, ValueError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_corpus_error(tmp_path):
    # proves a file without read permission is reported as unreadable, not as a crash
    path = tmp_path / "secret.txt"
    path.write_bytes(b"z" * 1000)
    path.chmod(0)
    with pytest.raises(CorpusError, match="cannot read"):
        Corpus(path, T)


def test_binary_file_is_a_valid_corpus_of_consecutive_windows(tmp_path):
    # proves any bytes form a corpus (random bytes, not UTF-8), batches are (B, T+1) int32
    # windows of consecutive bytes, train windows come from the head and validation
    # windows from the held-out tail only, and validation windows repeat every evaluation
    data = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    c = Corpus(path, T)
    assert len(c) == len(data) and 0 < len(c.val) < len(c.train)
    np.testing.assert_array_equal(np.concatenate([c.train, c.val]), np.frombuffer(data, np.uint8))
    rng = np.random.default_rng(1)
    for split, lo, hi in (("train", 0, len(c.train)), ("val", len(c.train), len(data))):
        x = c.batch(rng, 64, split)
        assert x.shape == (64, T + 1) and x.dtype == np.int32
        for w in x:
            at = data.find(bytes(w.astype(np.uint8)))        # a real run of T+1 corpus bytes ...
            assert lo <= at and at + T + 1 <= hi, split      # ... inside its own split
    np.testing.assert_array_equal(np.stack(c.val_batches(2, 4)), np.stack(c.val_batches(2, 4)))


def test_in_memory_bytes_corpus():
    # proves a bytes object works as a corpus too and keeps every byte
    c = Corpus(b"\x00\xff" * 50, T)
    assert len(c) == 100 and set(np.unique(np.concatenate([c.train, c.val]))) == {0, 255}
