"""Classic mistake: the step attends to the new key and value but never writes them into
the cache, so the next token will find slot pos unwritten. Must fail task kv_cache only."""
import math

from tinygrad import Tensor

from tinyar.assignments.decoder import causal_attention, prenorm_block  # noqa: F401

ASSIGNMENT = "decoder"


def kv_cache_step(q, k, v, cache_k, cache_v, pos):
    keys = Tensor.cat(cache_k[:, :, :pos], k, dim=2) if pos else k        # (B,H,pos+1,Dh)
    values = Tensor.cat(cache_v[:, :, :pos], v, dim=2) if pos else v
    scores = (q @ keys.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ values, scores.logsumexp(-1), cache_k, cache_v   # the cache as it came
