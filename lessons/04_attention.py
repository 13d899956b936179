"""Lesson 4: causal self-attention, and the log-sum-exp that lesson 7 will square.

For each head: q, k, v = x Wq, x Wk, x Wv; scores = q k^T / sqrt(d_head), a (T, T) table of
query i against key j; keys j > i are set to -inf (the causal mask); softmax over keys turns
each row into weights that sum to 1; out = weights @ v, then one output projection.
The softmax's normaliser, lse_i = log sum_j exp(score_ij), is returned too, per head.

Look at: the printed weights (lower triangle only); query 0's lse equal to its one score;
lse_i ≈ ln(i+1) in a fresh model, because tiny weights make every score ≈ 0.
Run: python lessons/04_attention.py
"""
from _common import CFG, B, D, T, check

import math

import numpy as np
from tinygrad import Tensor

from tinyar.model import Decoder

attn = Decoder(CFG).blocks[0].attn
H, Dh = attn.heads, attn.dim_head
x = np.random.default_rng(0).normal(size=(B, T, D)).astype(np.float32)  # a normalised residual stream
out, lse = attn(Tensor(x))                                      # (B,T,D), (B,H,T)
out, lse = out.numpy(), lse.numpy()

# The same computation in numpy, step by step.
Wq, Wk, Wv, Wo = (p.weight.numpy() for p in (attn.to_q, attn.to_k, attn.to_v, attn.to_out))
split = lambda y: y.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B,T,H*Dh) -> (B,H,T,Dh)
q, k, v = split(x @ Wq.T), split(x @ Wk.T), split(x @ Wv.T)
scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(Dh)            # (B,H,T,T): query i, key j
causal = np.tril(np.ones((T, T), dtype=bool))                    # key j visible to query i iff j <= i
scores = np.where(causal, scores, -np.inf)
m = scores.max(-1, keepdims=True)
lse_hand = (m + np.log(np.exp(scores - m).sum(-1, keepdims=True)))[..., 0]  # (B,H,T)
weights = np.exp(scores - lse_hand[..., None])                   # softmax, via the lse
out_hand = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, H * Dh) @ Wo.T

print("attention weights, batch 0, head 0 (row = query, column = key):")
print(np.array2string(weights[0, 0], precision=3, suppress_small=True))
check("weights_on_future_keys", weights[..., ~causal].sum(), 0.0)
check("max_abs_row_sum_minus_1", np.abs(weights.sum(-1) - 1).max(), 0.0, 1e-6)
check("lse_by_hand_vs_library", np.abs(lse_hand - lse).max(), 0.0, 1e-5)
check("output_by_hand_vs_library", np.abs(out_hand - out).max(), 0.0, 1e-5)
check("query0_lse_minus_its_score", np.abs(lse[..., 0] - scores[..., 0, 0]).max(), 0.0, 1e-5)

print("\nmean lse per query position vs ln(number of visible keys):")
for i in range(T):
    print(f"  query {i}: lse {lse[..., i].mean():+.4f}   ln({i + 1}) = {math.log(i + 1):.4f}")
check("lse_last_query", lse[..., T - 1].mean(), math.log(T), 0.02)   # expect ≈ ln 8 ≈ 2.079

# Exercises (answers in lessons/README.md)
# 1. If every score were 1 instead of about 0, what would query i's lse be?
# 2. Comment out the line that applies the causal mask: which checks fail?
