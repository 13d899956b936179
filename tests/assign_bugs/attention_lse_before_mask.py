"""Classic mistake: the log-sum-exp taken over every key, before the causal mask hides the
future ones (the attention output itself is right). The z-loss would then square the wrong
number. Must fail task attention only."""
import math

from tinygrad import Tensor, dtypes

from tinyar.assignments.decoder import kv_cache_step, prenorm_block  # noqa: F401

ASSIGNMENT = "decoder"


def causal_attention(q, k, v):
    T = q.shape[-2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    lse = scores.logsumexp(-1)                       # before the mask: over all T keys
    masked = Tensor.ones(T, T, dtype=dtypes.bool).tril().where(scores, -math.inf)
    return masked.softmax(-1) @ v, lse
