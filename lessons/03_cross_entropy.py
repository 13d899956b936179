"""Lesson 3: softmax cross-entropy, by hand and from the library.

The loss at one position is -log p(target), with p = softmax(logits). Written with the
log-sum-exp: loss = logsumexp(logits) - logits[target]. Computing exp(logits) directly
overflows once logits reach ~89 (float32); subtracting the row max first never does.
The batch loss is the mean over positions whose target is not PAD.

Look at: the naive formula turning into nan at 1000x logits while the shifted one stays
exact; an untrained model's loss, ln V = ln 258 ≈ 5.55, the cost of a uniform guess.
Run: python lessons/03_cross_entropy.py
"""
from _common import CFG, B, T, check

import math

import numpy as np
from tinygrad import Tensor

from tinyar.data import PAD, VOCAB, Corpus, default_corpus
from tinyar.loss import autoregressive_loss, cross_entropy
from tinyar.model import Decoder


def ce_by_hand(logits: np.ndarray, tgt: np.ndarray) -> float:
    """Mean of logsumexp(z) - z[tgt], in float64, max-shifted. (B,T,V), (B,T) -> float"""
    z = logits.astype(np.float64)
    m = z.max(-1, keepdims=True)                                   # (B,T,1)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(-1))                # (B,T), every exp <= 1
    return float((lse - np.take_along_axis(z, tgt[..., None], -1)[..., 0]).mean())


def ce_library(logits: np.ndarray, tgt: np.ndarray) -> float:
    return cross_entropy(Tensor(logits), Tensor(tgt), Tensor(tgt != PAD)).item()


rng = np.random.default_rng(0)
logits = rng.normal(size=(B, T, VOCAB)).astype(np.float32)
tgt = rng.integers(0, 256, size=(B, T)).astype(np.int32)
hand, lib = ce_by_hand(logits, tgt), ce_library(logits, tgt)
print(f"random logits: by hand {hand:.6f}, library {lib:.6f}")
check("by_hand_minus_library", abs(hand - lib), 0.0, 1e-5)

big = logits * 1000
with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
    e = np.exp(big.astype(np.float32))                             # inf for every logit > ~89
    naive = float(np.mean(-np.log(np.take_along_axis(e, tgt[..., None], -1)[..., 0] / e.sum(-1))))
hand_big, lib_big = ce_by_hand(big, tgt), ce_library(big, tgt)
print(f"1000x logits: naive {naive}, by hand {hand_big:.2f}, library {lib_big:.2f}")
check("naive_is_nan_at_1000x", math.isnan(naive), 1)
check("library_relative_error_at_1000x", abs(lib_big - hand_big) / hand_big, 0.0, 1e-5)

# PAD targets drop out of the mean: pad the second half of every row.
padded = tgt.copy()
padded[:, T // 2:] = PAD
check("pad_is_ignored", abs(ce_library(logits, padded) - ce_by_hand(logits[:, :T // 2], tgt[:, :T // 2])), 0.0, 1e-5)

# An untrained model: small random weights -> logits near 0 -> p ≈ 1/V for every byte.
corpus = Corpus(default_corpus(), CFG.seq_len)
model = Decoder(CFG)
ce = autoregressive_loss(model, corpus.batch(rng, B))["ce"].item()
print(f"untrained model on real text: {ce:.4f} nats; ln {VOCAB} = {math.log(VOCAB):.4f}")
check("untrained_ce", ce, math.log(VOCAB), 0.05)                  # expect ≈ 5.55

# Exercises (answers in lessons/README.md)
# 1. A model gives the right byte probability 0.5 at every position: what is its loss?
# 2. Delete the max shift in ce_by_hand (use m = 0): what does it give at 1000x logits?
