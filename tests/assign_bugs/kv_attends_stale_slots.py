"""Classic mistake: the new token is written into its slot, but the query attends to every
slot of the buffer, the stale ones after pos included. Must fail task kv_cache only."""
import math

from tinygrad import Tensor

from tinyar.assignments.decoder import causal_attention, prenorm_block  # noqa: F401

ASSIGNMENT = "decoder"


def kv_cache_step(q, k, v, cache_k, cache_v, pos):
    T = cache_k.shape[2]
    here = (Tensor.arange(T) == pos).reshape(1, 1, T, 1)
    cache_k, cache_v = here.where(k, cache_k), here.where(v, cache_v)
    scores = (q @ cache_k.transpose(-1, -2)) / math.sqrt(q.shape[-1])    # no mask: slots > pos are seen
    return scores.softmax(-1) @ cache_v, scores.logsumexp(-1), cache_k, cache_v
