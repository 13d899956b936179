"""Lesson 1: text to tokens.

tinyar reads bytes, not words: a token id is a byte value 0..255, and two special ids come
after them, MASK = 256 (lesson 6) and PAD = 257 (a target the loss ignores). So the vocabulary
is V = 258 and any file, text or not, is a corpus. Training sees B random windows of T+1
consecutive bytes at a time.

Look at: 'é' becoming two tokens; what decode does with half of it; the printed batch, one
window per row; how far the byte frequencies are from uniform.
Run: python lessons/01_bytes.py
"""
from _common import CFG, check

import math

import numpy as np

from tinyar.data import MASK, PAD, VOCAB, Corpus, decode, default_corpus, encode

ids = encode("héllo")                       # UTF-8: 'é' is the two bytes 195 169
print("encode('héllo')  =", ids.tolist())
print("decode(ids)      =", decode(ids))
print("decode(ids[:2])  =", repr(decode(ids[:2])), "  <- half an 'é' is invalid UTF-8: U+FFFD")
print(f"MASK = {MASK}, PAD = {PAD}: after the 256 bytes, so no byte can be mistaken for them")
check("tokens_in_hello", len(ids), 6)

# The default corpus: this Python's own standard-library sources (no download needed).
corpus = Corpus(default_corpus(), CFG.seq_len, name="python stdlib")
print(f"\ncorpus: {len(corpus):,} bytes = {len(corpus.train):,} train + {len(corpus.val):,} validation")
check("validation_fraction", len(corpus.val) / len(corpus), 0.1, 0.001)

rng = np.random.default_rng(0)
batch = corpus.batch(rng, CFG.batch_size)   # (B, T+1) int32: B windows at random offsets
print(f"\na batch: shape {batch.shape}, dtype {batch.dtype}")
for row in batch:
    print("  ", row.tolist(), repr(decode(row)))
check("batch_rows_B", batch.shape[0], CFG.batch_size)
check("batch_cols_T_plus_1", batch.shape[1], CFG.seq_len + 1)
text = corpus.train.tobytes()
check("rows_are_slices_of_train_text", all(bytes(row.astype(np.uint8)) in text for row in batch), 1)

# Byte statistics. Guessing uniformly costs ln V nats per byte; a model that knows only how
# often each byte occurs (no context) can reach the unigram entropy, and no better.
freq = np.bincount(corpus.train, minlength=256) / len(corpus.train)
top = np.argsort(-freq)[:5]
print("\nmost common bytes:", ", ".join(f"{chr(b)!r} {freq[b]:.1%}" for b in top))
p = freq[freq > 0]
entropy = -(p * np.log(p)).sum()
print(f"uniform guess: ln {VOCAB} = {math.log(VOCAB):.3f} nats; unigram entropy: {entropy:.3f} nats")
check("unigram_entropy_nats", entropy, 3.15, 0.15)   # Python source: lots of spaces

# Exercises (answers in lessons/README.md)
# 1. How many tokens is "naïve ✓"? (Count the UTF-8 bytes; then check with encode.)
# 2. A file holding only 'a' and 'b', equally often: what is its unigram entropy in nats?
