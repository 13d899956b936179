"""tinyar assignment 2: the decoder's attention, its pre-norm block and the KV cache.

Replace every `raise NotImplementedError(...)` with your code; keep the names and
signatures. Your functions get tinygrad Tensors (and plain ints) and return Tensors. The
docstrings are the specification, lessons/ASSIGNMENTS.md the contracts. prenorm_block calls
your causal_attention.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                     # every task: a table of points
    python cli.py grade path/to/tasks.py --task kv_cache     # one task
"""
from __future__ import annotations

import math

from tinygrad import Tensor, dtypes

ASSIGNMENT = "decoder"   # tells the grader which tasks this file answers


# ── task attention: 35 points ─────────────────────────────────────────────────────────
def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Causal scaled dot-product attention that also returns each query's log-sum-exp.
    q, k, v (B,H,T,Dh) float32 -> out (B,H,T,Dh) float, lse (B,H,T) float

    s[i,j] = q_i . k_j / sqrt(Dh); query i sees the keys j <= i only.
    lse[i] = log sum_{j<=i} exp(s[i,j])      (over the visible keys only: the z-loss squares it)
    out[i] = sum_{j<=i} exp(s[i,j] - lse[i]) v_j
    Stable for any scores (q and k 100x larger still give finite values). Gradients must flow
    through lse to q and k (the z-loss trains through it): tinygrad ops only. No randomness."""
    raise NotImplementedError("attention: softmax(q k^T / sqrt(Dh)) v over the keys j <= i, and each row's log-sum-exp over those keys (lesson 4, attention)")


# ── task block: 30 points ─────────────────────────────────────────────────────────────
def prenorm_block(x: Tensor, heads: int, attn_norm: Tensor, wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor,
                  ff_norm: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> tuple[Tensor, Tensor]:
    """One pre-norm decoder block: attention, then a GELU MLP, each on a normalized copy of x
    and added back to x (the residual stream itself is never normalized).
    x (B,T,D) float32; heads H; attn_norm, ff_norm (D,); wq, wk, wv (H*Dh, D); wo (D, H*Dh);
    w1 (F, D), b1 (F,), w2 (D, F), b2 (D,) -> y (B,T,D) float, lse (B,H,T) float

    norm(x, w) = (x - mean) / sqrt(var + 1e-5) * w   over the last axis, var biased, no bias term
    h = norm(x, attn_norm);  q = h wq^T, k = h wk^T, v = h wv^T, each split into H heads of
        Dh (B,H,T,Dh) (the feature axis H*Dh is head-major: head 0 is the first Dh columns)
    a, lse = causal_attention(q, k, v)       (your function from task attention)
    x = x + a' wo^T                          (a' : the heads joined back to (B,T,H*Dh))
    y = x + gelu(norm(x, ff_norm) w1^T + b1) w2^T + b2       (exact GELU: x Phi(x), with erf)
    Every weight matrix is (out, in), as in tinyar.model.Linear. No randomness."""
    raise NotImplementedError("block: x + attention(norm(x)), then x + mlp(norm(x)): normalize the sublayers' inputs, never the residual (lesson 5, the decoder)")


# ── task kv_cache: 35 points ──────────────────────────────────────────────────────────
def kv_cache_step(q: Tensor, k: Tensor, v: Tensor, cache_k: Tensor, cache_v: Tensor,
                  pos: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sampling one token with a KV cache: the new token's query attends to every earlier
    token's cached key and value and to its own, without recomputing the earlier ones.
    q, k, v (B,H,1,Dh) float32: the new token's, at position pos (0 <= pos < T);
    cache_k, cache_v (B,H,T,Dh) float32: fixed-size buffers whose slots 0..pos-1 hold the keys
    and values of positions 0..pos-1, while slots pos..T-1 hold stale numbers (finite, from
    an earlier text) that must not be seen.
    -> out (B,H,1,Dh) float, lse (B,H,1) float, cache_k', cache_v' (B,H,T,Dh) float

    cache_k' is cache_k with slot pos replaced by k (every other slot unchanged), cache_v'
    likewise with v. out and lse are causal_attention's row pos: the query sees slots 0..pos
    of cache_k', cache_v' (scale 1/sqrt(Dh)), so the result equals running causal_attention
    on the whole text so far and taking its last row. Return new Tensors (or the inputs
    updated in place, as long as the returned values are right). No randomness."""
    raise NotImplementedError("kv_cache: write k, v into slot pos, then attend from q to slots 0..pos only (lesson 10, sampling)")
