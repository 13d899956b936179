"""Classic mistake: a post-norm block (the original Transformer's), normalizing the residual
stream after each sublayer is added instead of the sublayer's input. Must fail task block only."""
from tinyar.assignments.decoder import causal_attention, kv_cache_step  # noqa: F401

ASSIGNMENT = "decoder"


def prenorm_block(x, heads, attn_norm, wq, wk, wv, wo, ff_norm, w1, b1, w2, b2):
    B, T, D = x.shape
    q, k, v = ((x @ w.T).reshape(B, T, heads, -1).transpose(1, 2) for w in (wq, wk, wv))
    a, lse = causal_attention(q, k, v)
    x = (x + a.transpose(1, 2).reshape(B, T, -1) @ wo.T).layernorm(eps=1e-5) * attn_norm
    f = (x @ w1.T + b1).gelu(approximate="none") @ w2.T + b2
    return (x + f).layernorm(eps=1e-5) * ff_norm, lse
