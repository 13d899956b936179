"""The answer key of assignment 2 (the decoder): causal attention with its log-sum-exp, the
pre-norm block, one step of a KV cache, written out as plain functions on Tensors.

The trainer's decoder (tinyar/model.py) is written as classes with speed-minded kernels, and
the sampler's cache (tinyar/kvcache.py) as jitted buffers; tests/test_assign.py checks that
these functions give the same numbers as that code on the same weights, so the key can't drift.
"""
from __future__ import annotations

import math

from tinygrad import Tensor, dtypes


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Causal scaled dot-product attention that also returns each query's log-sum-exp.
    q, k, v (B,H,T,Dh) float32 -> out (B,H,T,Dh) float, lse (B,H,T) float

    s[i,j] = q_i . k_j / sqrt(Dh); query i sees the keys j <= i only.
    lse[i] = log sum_{j<=i} exp(s[i,j])      (over the visible keys only: the z-loss squares it)
    out[i] = sum_{j<=i} exp(s[i,j] - lse[i]) v_j
    Stable for any scores (q and k 100x larger still give finite values). Gradients must flow
    through lse to q and k (the z-loss trains through it): tinygrad ops only. No randomness."""
    # BEGIN TASK attention
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])        # (B,H,T,T)
    visible = Tensor.ones(T, T, dtype=dtypes.bool, device=q.device).tril()   # key j <= query i
    scores = visible.where(scores, -math.inf)
    top = scores.max(-1, keepdim=True).detach()                          # the row max: exp stays <= 1
    e = (scores - top).exp()
    total = e.sum(-1, keepdim=True)
    return (e / total) @ v, (total.log() + top).squeeze(-1)
    # END TASK attention


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
    # BEGIN TASK block
    B, T, D = x.shape
    h = x.layernorm(eps=1e-5) * attn_norm
    q, k, v = ((h @ w.T).reshape(B, T, heads, -1).transpose(1, 2) for w in (wq, wk, wv))   # (B,H,T,Dh)
    a, lse = causal_attention(q, k, v)
    x = x + a.transpose(1, 2).reshape(B, T, -1) @ wo.T
    f = (x.layernorm(eps=1e-5) * ff_norm) @ w1.T + b1
    return x + f.gelu(approximate="none") @ w2.T + b2, lse
    # END TASK block


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
    # BEGIN TASK kv_cache
    T = cache_k.shape[-2]
    slot = Tensor.arange(T).to(q.device).reshape(1, 1, T, 1)              # (1,1,T,1)
    cache_k, cache_v = (slot == pos).where(k, cache_k), (slot == pos).where(v, cache_v)
    scores = (q @ cache_k.transpose(-1, -2)) / math.sqrt(q.shape[-1])     # (B,H,1,T)
    scores = (slot.reshape(1, 1, 1, T) <= pos).where(scores, -math.inf)    # slots after pos: stale
    top = scores.max(-1, keepdim=True).detach()
    e = (scores - top).exp()
    total = e.sum(-1, keepdim=True)
    return (e / total) @ cache_v, (total.log() + top).squeeze(-1), cache_k, cache_v
    # END TASK kv_cache
