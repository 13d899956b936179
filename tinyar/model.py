"""The decoder: x-transformers' default `TransformerWrapper(attn_layers=Decoder(...))`,
written out on tinygrad tensors so every attention layer's pre-softmax log-sum-exp is visible.

token emb + absolute pos emb -> depth x [pre-norm attention, pre-norm GELU MLP] -> LayerNorm
-> untied head. Speed-minded choices that show here, each measured (README "Speed"): separate
q/k/v weights instead of splitting a fused output; `stored()` on matmul, norm and GELU outputs
and the attention probabilities; softmax and log-sum-exp from one exp pass. The kernel-level
helpers (`stored`, `matmul_wt`, `embedding`, `padded_head`) live in tinyar/kernels.py.

Precision (`cfg.dtype`): the weights are float32 (the optimizer updates them); with float16 or
bfloat16 each matmul casts its inputs and weights to that dtype and its output stays in it,
while the residual stream, LayerNorm, GELU/SiLU, the attention softmax and its log-sum-exp,
and so every loss, are float32. With float32 every cast is a no-op: the graph is unchanged.
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes

from tinyar.config import DTYPES, Config
from tinyar.kernels import embedding, matmul_wt, padded_head, stored, with_attention_backward

MATMUL_DTYPES = {name: getattr(dtypes, name) for name in DTYPES}   # --dtype name -> tinygrad dtype


def normal(rng: np.random.Generator | None, *shape: int, std: float = 0.02) -> Tensor:
    """N(0, std^2) initial weights drawn by numpy: an unrealized `Tensor.normal` would be
    recomputed (random bits + Box-Muller) inside every kernel that first reads it, and those
    kernels took minutes to generate. Numpy also makes the init the same on every device."""
    rng = rng or np.random.default_rng()
    return Tensor((rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32))


class Linear:
    """y = x W^T (+ b). W is (out, in), as in torch, so x-transformers weights load as they are.
    x, W and b are cast to `dtype` for the matmul, and y is in `dtype` (float32: no casts)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False, std: float = 0.02,
                 rng: np.random.Generator | None = None, dtype=dtypes.float32):
        self.weight = normal(rng, d_out, d_in, std=std)
        self.bias = Tensor(np.zeros(d_out, np.float32)) if bias else None
        self.dtype = dtype

    def __call__(self, x: Tensor) -> Tensor:
        dt = self.dtype
        y = matmul_wt(x.cast(dt), self.weight.cast(dt))
        return stored(y if self.bias is None else y + self.bias.cast(dt))


class LayerNorm:
    """LayerNorm with a learned scale and no bias (x-transformers' default). eps 1e-5."""

    def __init__(self, dim: int):
        self.weight = Tensor(np.ones(dim, np.float32))

    def __call__(self, x: Tensor) -> Tensor:
        return stored(x.float().layernorm(eps=1e-5) * self.weight)   # statistics in float32


def mask_scores(scores: Tensor, hidden_keys: Tensor | None = None) -> Tensor:
    """Hide the keys a query may not see: -inf where key j > query i (causal) or, under fcm
    masking, where key j is hidden. (B,H,T,T), (B,T) bool or None -> (B,H,T,T)"""
    # BEGIN TASK fcm
    B, _, T, _ = scores.shape
    visible = Tensor.ones(T, T, dtype=dtypes.bool, device=scores.device).tril()  # (T,T) j <= i
    if hidden_keys is not None:
        visible = visible & hidden_keys.logical_not().reshape(B, 1, 1, T)      # (B,1,T,T)
    return visible.where(scores, -math.inf)
    # END TASK fcm


def attend(q: Tensor, k: Tensor, v: Tensor, hidden_keys: Tensor | None = None,
           visible: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Scaled dot-product attention that also returns each query's log-sum-exp.
    q (B,H,S,Dh), k and v (B,H,T,Dh) -> out (B,H,S,Dh), lse (B,H,S) float32, probs (B,H,S,T)

    lse[b,h,i] = log sum_j exp(q_i.k_j / sqrt(d_head)) over the keys j that query i may see:
    j <= i and, under fcm masking, j not in hidden_keys (mask_scores), or `visible` (S,T) bool
    when given (the KV cache). It is the quantity the z-loss squares."""
    qk = (q @ k.transpose(-1, -2)).float() * (q.shape[-1] ** -0.5)   # (B,H,S,T); softmax in float32
    scores = stored(mask_scores(qk, hidden_keys) if visible is None else visible.where(qk, -math.inf))
    # softmax and its log-sum-exp from one exp pass: e = exp(scores - max), probs = e / sum e,
    # lse = log(sum e) + max. (Computing lse with logsumexp and then exp(scores - lse) took
    # two more exp passes over (B,H,T,T), forward and backward: measured 11% of a step on CL.)
    top = scores.max(-1, keepdim=True).detach()   # any constant per row works; the max is safe
    e = stored((scores - top).exp())
    total = e.sum(-1, keepdim=True)
    probs = stored((e / total).cast(v.dtype))
    lse = (total.log() + top).squeeze(-1)         # (B,H,S)
    return stored(probs @ v), lse, probs   # stored: else to_out's matmul recomputed it (-3% a step)


# the same forward with its backward written by hand (tinyar/kernels.py), for training
attend_fused = with_attention_backward(attend)


class Attention:
    def __init__(self, dim: int, heads: int, dim_head: int, out_std: float, rng: np.random.Generator | None = None,
                 dtype=dtypes.float32):
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q, self.to_k, self.to_v = (Linear(dim, inner, rng=rng, dtype=dtype) for _ in range(3))
        self.to_out = Linear(inner, dim, std=out_std, rng=rng, dtype=dtype)

    def split_heads(self, y: Tensor) -> Tensor:
        """(B,S,H*Dh) -> (B,H,S,Dh)"""
        B, S, _ = y.shape
        return y.reshape(B, S, self.heads, self.dim_head).transpose(1, 2)

    def __call__(self, x: Tensor, hidden_keys: Tensor | None = None, cache=None) -> tuple[Tensor, Tensor]:
        """x (B,T,D), hidden_keys (B,T) bool or None -> out (B,T,D), lse (B,H,T)

        lse[b,h,i] = log sum_j exp(q_i.k_j / sqrt(d_head)) over the keys j that query i may see
        (j <= i and, under fcm masking, j not hidden): the quantity the z-loss squares.
        `cache` (sampling only, tinyar/kvcache.py) supplies the keys and values of earlier
        positions and which of them each query may see."""
        B, T, _ = x.shape
        q, k, v = (self.split_heads(proj(x)) for proj in (self.to_q, self.to_k, self.to_v))  # (B,H,T,Dh)
        if cache is None:
            out, lse, _ = attend_fused(q, k, v, *([] if hidden_keys is None else [hidden_keys]))
        else:
            k, v = cache.merge(k, v)                            # (B,H,T_cache,Dh)
            out, lse, _ = attend(q, k, v, visible=cache.visible)
        return self.to_out(out.transpose(1, 2).reshape(B, T, self.heads * self.dim_head)), lse


class FeedForward:
    def __init__(self, dim: int, out_std: float, rng: np.random.Generator | None = None, dtype=dtypes.float32):
        self.fc1 = Linear(dim, 4 * dim, bias=True, rng=rng, dtype=dtype)
        self.fc2 = Linear(4 * dim, dim, bias=True, std=out_std, rng=rng, dtype=dtype)

    def __call__(self, x: Tensor) -> Tensor:
        h = self.fc1(x)   # exact (erf) GELU, computed in float32, stored in the matmul dtype
        return self.fc2(stored(h.float().gelu(approximate="none").cast(h.dtype)))


class Block:
    def __init__(self, cfg: Config, rng: np.random.Generator | None = None):
        out_std = 0.02 / math.sqrt(2 * cfg.depth)  # residual projections start small (GPT-2)
        dt = MATMUL_DTYPES[cfg.dtype]
        self.attn_norm, self.attn = LayerNorm(cfg.dim), Attention(cfg.dim, cfg.heads, cfg.head_dim, out_std, rng, dt)
        self.ff_norm, self.ff = LayerNorm(cfg.dim), FeedForward(cfg.dim, out_std, rng, dt)

    def __call__(self, x: Tensor, hidden_keys: Tensor | None = None, cache=None) -> tuple[Tensor, Tensor]:
        a, lse = self.attn(self.attn_norm(x), hidden_keys, cache)
        x = stored(x + a)             # float32 + the matmul dtype -> float32 residual stream
        return stored(x + self.ff(self.ff_norm(x))), lse


class Head:
    """The untied output head: logits = hidden W^T, W (V,D), in the matmul dtype, no bias."""

    def __init__(self, dim: int, vocab: int, rng: np.random.Generator | None = None, dtype=dtypes.float32):
        self.weight, self.dtype = normal(rng, vocab, dim), dtype

    def __call__(self, hidden: Tensor) -> Tensor:   # (B,T,D) -> (B,T,V) float32
        return padded_head(hidden.cast(self.dtype), self.weight.cast(self.dtype)).float()


class NextEmbedHead:
    """Linear(d,d) -> SiLU -> Linear(d,d), no biases: predicts the next token's embedding."""

    def __init__(self, dim: int, rng: np.random.Generator | None = None, dtype=dtypes.float32):
        self.fc1, self.fc2 = Linear(dim, dim, rng=rng, dtype=dtype), Linear(dim, dim, rng=rng, dtype=dtype)

    def __call__(self, h: Tensor) -> Tensor:
        return self.fc2(self.fc1(h).float().silu()).float()   # (B,T,D) float32


class Decoder:
    def __init__(self, cfg: Config):
        self.cfg, self.dtype = cfg, MATMUL_DTYPES[cfg.dtype]  # the matmuls' dtype; weights are float32
        rng = np.random.default_rng(cfg.seed)                 # same seed -> same initial weights
        self.tok_emb = normal(rng, cfg.vocab, cfg.dim)        # (V,D)
        self.pos_emb = normal(rng, cfg.seq_len, cfg.dim)      # (T,D), used as is
        self.blocks = [Block(cfg, rng) for _ in range(cfg.depth)]
        self.norm = LayerNorm(cfg.dim)
        self.head = Head(cfg.dim, cfg.vocab, rng, self.dtype)
        self.next_embed = NextEmbedHead(cfg.dim, rng, self.dtype) if cfg.use_next_embed else None

    def embed(self, ids: Tensor) -> Tensor:
        """Token-embedding rows, no position term. (B,T) int -> (B,T,D)"""
        return embedding(self.tok_emb, ids)

    def __call__(self, inp: Tensor, hidden_keys: Tensor | None = None,
                 start_pos: int = 0) -> tuple[Tensor, list[Tensor], Tensor]:
        """inp (B,T) int, hidden_keys (B,T) bool -> logits (B,T,V), [lse (B,H,T)] * depth, hidden (B,T,D)

        `hidden` is the final-norm state that both the logits head and the next-embed head read."""
        T = inp.shape[1]
        hidden, lses = self.run_blocks(self.embed(inp) + self.pos_emb[start_pos:start_pos + T], hidden_keys)
        return self.logits(hidden), lses, hidden

    def run_blocks(self, x: Tensor, hidden_keys: Tensor | None = None,
                   caches: list | None = None) -> tuple[Tensor, list[Tensor]]:
        """Embedded tokens through every block and the final norm.
        x (B,T,D) -> hidden (B,T,D), [lse (B,H,T)] * depth. `caches`: one per block (sampling)."""
        lses = []
        for block, cache in zip(self.blocks, caches or [None] * len(self.blocks)):
            x, lse = block(x, hidden_keys, cache)
            lses.append(lse)
        return self.norm(x), lses

    def logits(self, hidden: Tensor) -> Tensor:
        """The output head. (B,T,D) -> (B,T,V) float32"""
        return self.head(hidden)

    def num_params(self) -> int:
        from tinygrad.nn.state import get_parameters
        return sum(p.numel() for p in get_parameters(self))


def param_count(cfg: Config) -> int:
    """Decoder(cfg).num_params() without building it (a model too large to build can be refused)."""
    d, inner = cfg.dim, cfg.heads * cfg.head_dim
    block = 2 * d + 4 * d * inner + 8 * d * d + 5 * d   # two norms, q k v out, the feed-forward's 4d
    return (2 * cfg.vocab + cfg.seq_len) * d + cfg.depth * block + d + (2 * d * d if cfg.use_next_embed else 0)
