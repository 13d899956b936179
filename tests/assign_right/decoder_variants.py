"""Right answers to assignment 2 written differently from the reference: every task must
pass. (One head at a time in float64, a -1e30 fill and logsumexp; a hand-written LayerNorm, heads
split by slicing, GELU from erf; the cache written by slicing and concatenating.)"""
import math

from tinygrad import Tensor, dtypes

ASSIGNMENT = "decoder"


def causal_attention(q, k, v):
    B, H, T, Dh = q.shape
    q, k, v = (t.cast(dtypes.float64) for t in (q, k, v))
    future = Tensor.ones(T, T, dtype=dtypes.bool).triu(1)
    outs, lses = [], []
    for h in range(H):                                   # one head at a time, a finite fill
        s = future.where(-1e30, (q[:, h] @ k[:, h].transpose(-1, -2)) * Dh ** -0.5)   # (B,T,T)
        lse = s.logsumexp(-1)                            # (B,T)
        outs.append((s - lse.unsqueeze(-1)).exp() @ v[:, h])
        lses.append(lse)
    return Tensor.stack(*outs, dim=1), Tensor.stack(*lses, dim=1)


def norm(x, w):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / (var + 1e-5).sqrt() * w


def prenorm_block(x, heads, attn_norm, wq, wk, wv, wo, ff_norm, w1, b1, w2, b2):
    Dh = wq.shape[0] // heads
    h = norm(x, attn_norm)
    split = lambda y: Tensor.stack(*[y[:, :, i * Dh:(i + 1) * Dh] for i in range(heads)], dim=1)   # (B,H,T,Dh)
    a, lse = causal_attention(split(h.matmul(wq.T)), split(h.matmul(wk.T)), split(h.matmul(wv.T)))
    x = x + Tensor.cat(*[a[:, i] for i in range(heads)], dim=-1).cast(x.dtype) @ wo.T
    f = norm(x, ff_norm) @ w1.T + b1
    return x + (0.5 * f * (1 + (f / math.sqrt(2)).erf())) @ w2.T + b2, lse


def kv_cache_step(q, k, v, cache_k, cache_v, pos):
    T, Dh = cache_k.shape[2], q.shape[-1]
    write = lambda c, new: Tensor.cat(*[t for t in (c[:, :, :pos], new, c[:, :, pos + 1:]) if t.shape[2]], dim=2)
    cache_k, cache_v = write(cache_k, k), write(cache_v, v)
    s = (q @ cache_k[:, :, :pos + 1].transpose(-1, -2)) / math.sqrt(Dh)
    return s.softmax(-1) @ cache_v[:, :, :pos + 1], s.logsumexp(-1), cache_k, cache_v
