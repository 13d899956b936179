"""Kernel-level helpers that make the decoder fast on tinygrad, kept apart from model.py so
the model reads like the maths. Each one leaves values and gradients unchanged (the parity
and oracle tests run through them) and was kept only because it measured faster (README
"Speed").

    stored(x)            write x (and its gradient) to memory instead of recomputing it
    matmul_wt(x, w)      x @ w.T with a weight gradient laid out for contiguous reductions
    embedding(w, ids)    w[ids] with the gradient as one one-hot matmul
    padded_head(h, w)    the logits matmul with the vocabulary padded to a multiple of 16
"""
from __future__ import annotations

from tinygrad import Tensor
from tinygrad.function import function


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


def _attention_backward(*grads, call=None) -> tuple:
    """Gradients of (out, lse, probs) = attend(q, k, v[, hidden_keys]), written out so that no
    (B,H,T,T) tensor is read or written more than needed. With P = probs, O = out and scores
    S = q k^T / sqrt(Dh) (hidden keys: P = 0, so they get no gradient):
        dP = dO v^T,  D_i = sum_j P_ij dP_ij = dO_i . O_i   (a (B,H,T) dot, no (T,T) pass)
        dS = P * (dP - D + dlse)      softmax backward, plus d lse / dS = P
        dq = dS k / sqrt(Dh),  dk = dS^T q / sqrt(Dh),  dv = P^T dO
    tinygrad's own backward of the same graph ran ~10 (B,H,T,T) elementwise and reduce kernels
    per layer. tinygrad passes only the gradients that exist (dlse is absent when the z-loss is
    off), so they are told apart by rank."""
    if call is None:
        *grads, call = grads
    q, k, v = (Tensor(u) for u in call.src[1:4])
    out, probs = Tensor(call.gettuple(0)), Tensor(call.gettuple(2))
    d_out = next(Tensor(g) for g in grads if len(g.shape) == 4)                 # (B,H,S,Dh)
    d_lse = next((Tensor(g).float().unsqueeze(-1) for g in grads if len(g.shape) == 3), 0.0)  # (B,H,S,1)
    scale = q.shape[-1] ** -0.5
    d_row = (d_out.float() * out.float()).sum(-1, keepdim=True)                 # (B,H,S,1) = D
    dp = (d_out @ v.transpose(-1, -2)).float()                                 # (B,H,S,T)
    ds = stored((probs.float() * (dp - d_row + d_lse)).cast(q.dtype))          # (B,H,S,T)
    dq = (ds @ k) * scale
    dk = (ds.transpose(-1, -2) @ q) * scale
    dv = probs.transpose(-1, -2) @ d_out.cast(v.dtype)
    # each gradient written once: else tinygrad fused these matmuls into the q/k/v projections'
    # backward and recomputed them there
    grads = (g.cast(t.dtype).contiguous().uop for g, t in ((dq, q), (dk, k), (dv, v)))
    return (*grads,) + (None,) * (len(call.src) - 4)


def with_attention_backward(attend):
    """attend(q, k, v[, hidden_keys]) -> (out, lse, probs), differentiated by
    _attention_backward instead of tinygrad's autograd (same values and gradients)."""
    return function(grad_fxn=_attention_backward)(attend)


# tinyar.kernel_cache names these backwards by path in tinygrad's graph hash (see there)
CUSTOM_BACKWARDS = {_matmul_wt_backward: "tinyar.kernels._matmul_wt_backward",
                    _embedding_backward: "tinyar.kernels._embedding_backward",
                    _attention_backward: "tinyar.kernels._attention_backward"}


def padded_head(hidden: Tensor, w: Tensor) -> Tensor:
    """hidden @ w^T with w's rows padded with zeros to a multiple of 16 inside the matmul and
    the extra columns dropped (w itself stays (V,D)): with V = 258 = 2*3*43 tinygrad found no
    good tiling and this kernel ran ~2.5x slower. (B,T,D), (V,D) -> (B,T,V)"""
    V = w.shape[0]
    return stored(matmul_wt(hidden, w.pad(((0, -V % 16), (0, 0)))))[..., :V]
