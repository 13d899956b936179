"""Classic mistake: the scores scaled by 1/d_head instead of 1/sqrt(d_head), so the softmax
is far too flat. Must fail task attention only."""
import math

from tinygrad import Tensor, dtypes

from tinyar.assignments.decoder import kv_cache_step, prenorm_block  # noqa: F401

ASSIGNMENT = "decoder"


def causal_attention(q, k, v):
    T, Dh = q.shape[-2], q.shape[-1]
    scores = (q @ k.transpose(-1, -2)) / Dh
    scores = Tensor.ones(T, T, dtype=dtypes.bool).tril().where(scores, -math.inf)
    lse = scores.logsumexp(-1)
    return (scores - lse.unsqueeze(-1)).exp() @ v, lse
