"""The decoder: x-transformers' default `TransformerWrapper(attn_layers=Decoder(...))`,
written out on tinygrad tensors so every attention layer's pre-softmax log-sum-exp is visible.

token emb + absolute pos emb -> depth x [pre-norm attention, pre-norm GELU MLP] -> LayerNorm
-> untied head. Kernel-aware details, each measured (README "Speed"): separate q/k/v weights
instead of splitting a fused output; `stored()` (contiguous forward and backward) on matmul,
norm and GELU outputs and the attention probabilities; softmax and log-sum-exp from one exp
pass; hand-written backwards for the weight matmuls and the embedding gather (same gradients,
laid out so their long reductions read contiguous memory).

Precision (`cfg.dtype`): the weights are float32 (the optimizer updates them); with float16 or
bfloat16 each matmul casts its inputs and weights to that dtype and its output stays in it,
while the residual stream, LayerNorm, GELU/SiLU, the attention softmax and its log-sum-exp,
and so every loss, are float32. With float32 every cast is a no-op: the graph is unchanged.
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.function import function

from tinyar.config import DTYPES, Config

MATMUL_DTYPES = {name: getattr(dtypes, name) for name in DTYPES}   # --dtype name -> tinygrad dtype


def normal(rng: np.random.Generator | None, *shape: int, std: float = 0.02) -> Tensor:
    """N(0, std^2) initial weights drawn by numpy: an unrealized `Tensor.normal` would be
    recomputed (random bits + Box-Muller) inside every kernel that first reads it, and those
    kernels took minutes to generate. Numpy also makes the init the same on every device."""
    rng = rng or np.random.default_rng()
    return Tensor((rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float32))


def stored(x: Tensor) -> Tensor:
    """x, written to memory in the forward pass, and its gradient written to memory in the
    backward pass. Without this tinygrad may fuse a whole matmul (or softmax) into every
    kernel that reads its result, recomputing it there: measured 4x slower steps and
    minutes of kernel generation. Values are unchanged."""
    return x.contiguous().contiguous_backward()


def _matmul_wt_backward(grad, call) -> tuple:
    """Gradients of y = x @ W^T, by hand: dx = dy @ W and dW = dy^T @ x, where dW reads dy and x
    through transposed copies, so the long reduction over the B*T rows runs along contiguous
    memory. tinygrad's own backward read them row-strided: ~2x slower weight-gradient kernels,
    measured 10% of a training step on CL (losses and gradients unchanged)."""
    x, w = (Tensor(u) for u in call.src[1:])
    dy = Tensor(grad).reshape(-1, w.shape[0])                              # (B*T, out)
    dx = (dy @ w).reshape(x.shape)
    dw = dy.T.contiguous() @ x.reshape(-1, w.shape[1]).T.contiguous().T    # (out, in)
    return dx.uop, dw.uop


@function(grad_fxn=_matmul_wt_backward)
def matmul_wt(x: Tensor, w: Tensor) -> Tensor:
    """x @ w.T with the backward above. (..., in), (out, in) -> (..., out)"""
    return x @ w.T


def _embedding_backward(grad, call) -> tuple:
    """Gradient of rows = W[ids]: dW = onehot(ids)^T @ d rows, as one matmul over the B*T
    positions with both sides laid out along them (a (V, B*T) one-hot and d rows transposed).
    tinygrad's own backward of the gather was one slow reduction kernel (46 ms of a 750 ms
    step on CL); this one made the step 8% faster, with the same gradient."""
    w, ids = (Tensor(u) for u in call.src[1:])
    V, D = w.shape
    d_rows = Tensor(grad).reshape(-1, D)                                     # (N, D)
    vocab = (w[:, :1].ones_like().cumsum(0) - 1).cast(ids.dtype)             # (V,1) 0..V-1, on w's device(s)
    onehot_t = (vocab == ids.reshape(1, -1)).cast(d_rows.dtype).contiguous()   # (V, N)
    return (onehot_t @ d_rows.T.contiguous().T).uop, None


@function(grad_fxn=_embedding_backward)
def embedding(w: Tensor, ids: Tensor) -> Tensor:
    """w[ids] with the backward above. (V, D), (...) int -> (..., D)"""
    return w[ids]


def _stable_call_names() -> None:
    """tinygrad 0.14 names a custom backward in a graph's content hash by its id(), which is new
    in every process, so graphs using matmul_wt or embedding never matched the schedules saved
    by tinyar.kernel_cache (a second run's first step took 14 s instead of 3). Name ours by
    their import path instead; every other backward keeps tinygrad's own naming."""
    from tinygrad.uop.ops import CallInfo
    if getattr(CallInfo.__repr__, "_tinyar", False):
        return
    original = CallInfo.__repr__

    ours = {_matmul_wt_backward: "tinyar.model._matmul_wt_backward",
            _embedding_backward: "tinyar.model._embedding_backward"}

    def __repr__(self) -> str:
        if self.grad_fxn in ours:
            return f"CallInfo({ours[self.grad_fxn]}, {self.name!r}, {self.precompile}, {self.precompile_backward})"
        return original(self)
    __repr__._tinyar = True
    CallInfo.__repr__ = __repr__


_stable_call_names()


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


class Attention:
    def __init__(self, dim: int, heads: int, dim_head: int, out_std: float, rng: np.random.Generator | None = None,
                 dtype=dtypes.float32):
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.to_q, self.to_k, self.to_v = (Linear(dim, inner, rng=rng, dtype=dtype) for _ in range(3))
        self.to_out = Linear(inner, dim, std=out_std, rng=rng, dtype=dtype)

    def __call__(self, x: Tensor, hidden_keys: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B,T,D), hidden_keys (B,T) bool or None -> out (B,T,D), lse (B,H,T)

        lse[b,h,i] = log sum_j exp(q_i.k_j / sqrt(d_head)) over the keys j that query i may see
        (j <= i and, under fcm masking, j not hidden): the quantity the z-loss squares."""
        B, T, _ = x.shape
        H, Dh = self.heads, self.dim_head
        q = self.to_q(x).reshape(B, T, H, Dh).transpose(1, 2)  # (B,H,T,Dh), in the matmul dtype
        k = self.to_k(x).reshape(B, T, H, Dh).transpose(1, 2)
        v = self.to_v(x).reshape(B, T, H, Dh).transpose(1, 2)
        qk = (q @ k.transpose(-1, -2)).float()                  # (B,H,T,T); softmax statistics in float32
        scores = stored(mask_scores(qk * (Dh ** -0.5), hidden_keys))
        # softmax and its log-sum-exp from one exp pass: e = exp(scores - max), probs = e / sum e,
        # lse = log(sum e) + max. (Computing lse with logsumexp and then exp(scores - lse) took
        # two more exp passes over (B,H,T,T), forward and backward: measured 11% of a step on CL.)
        top = scores.max(-1, keepdim=True).detach()            # any constant per row works; the max is safe
        e = stored((scores - top).exp())
        total = e.sum(-1, keepdim=True)
        probs = stored((e / total).cast(v.dtype))
        lse = (total.log() + top).squeeze(-1)                   # (B,H,T)
        out = (probs @ v).transpose(1, 2).reshape(B, T, H * Dh)
        return self.to_out(out), lse


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

    def __call__(self, x: Tensor, hidden_keys: Tensor | None) -> tuple[Tensor, Tensor]:
        a, lse = self.attn(self.attn_norm(x), hidden_keys)
        x = stored(x + a)             # float32 + the matmul dtype -> float32 residual stream
        return stored(x + self.ff(self.ff_norm(x))), lse


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
        self.head = Linear(cfg.dim, cfg.vocab, rng=rng)      # its matmul is in logits(), below
        self.next_embed = NextEmbedHead(cfg.dim, rng, self.dtype) if cfg.use_next_embed else None

    def embed(self, ids: Tensor) -> Tensor:
        """Token-embedding rows, no position term. (B,T) int -> (B,T,D)"""
        return embedding(self.tok_emb, ids)

    def __call__(self, inp: Tensor, hidden_keys: Tensor | None = None,
                 start_pos: int = 0) -> tuple[Tensor, list[Tensor], Tensor]:
        """inp (B,T) int, hidden_keys (B,T) bool -> logits (B,T,V), [lse (B,H,T)] * depth, hidden (B,T,D)

        `hidden` is the final-norm state that both the logits head and the next-embed head read."""
        T = inp.shape[1]
        x = self.embed(inp) + self.pos_emb[start_pos:start_pos + T]
        lses = []
        for block in self.blocks:
            x, lse = block(x, hidden_keys)
            lses.append(lse)
        hidden = self.norm(x)
        return self.logits(hidden), lses, hidden

    def logits(self, hidden: Tensor) -> Tensor:
        """The output head, hidden @ W^T, in the matmul dtype. (B,T,D) -> (B,T,V) float32

        For speed the head's rows are padded with zeros to a multiple of 16 inside the matmul
        and the extra columns dropped (the weight stays (V,D)): with V = 258 = 2*3*43 tinygrad
        found no good tiling and this kernel ran ~2.5x slower."""
        V = self.cfg.vocab
        dt = self.dtype
        w = self.head.weight.cast(dt).pad(((0, -V % 16), (0, 0)))             # (V',D), V' % 16 == 0
        return stored(matmul_wt(hidden.cast(dt), w))[..., :V].float()

    def num_params(self) -> int:
        from tinygrad.nn.state import get_parameters
        return sum(p.numel() for p in get_parameters(self))
