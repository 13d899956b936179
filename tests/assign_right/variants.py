"""Right answers written differently from the reference: every task must pass.
(Loops, rng.choice, a where() fill of -1e30, an all-False key mask in replace mode,
float64 inside, the weights tested with '!= 0'.)"""
import math

import numpy as np
from tinygrad import Tensor, dtypes

from tinyar.data import MASK, PAD  # noqa: F401
from tinyar.loss import num_masked


def shift(tokens):
    T = tokens.shape[1] - 1
    return tokens.shrink((None, (0, T))), tokens.shrink((None, (1, T + 1)))


def choose_mask_positions(rng, B, T, p):
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    for b in range(B):
        mask[b, rng.choice(np.arange(1, T), size=k, replace=False)] = True
    return mask


def replace_masked(inp, mask):
    return inp + mask.cast(inp.dtype) * (MASK - inp)


def apply_mask(inp, tgt, mask, mode):
    if mode == "replace":
        return replace_masked(inp, mask), tgt, mask & mask.logical_not()   # all False: hides nothing
    if mode == "fcm":
        return inp, tgt, mask
    raise ValueError(mode)


def mask_scores(scores, hidden_keys=None):
    B, H, T, _ = scores.shape
    i, j = Tensor.arange(T).reshape(T, 1), Tensor.arange(T).reshape(1, T)
    hide = (j > i).reshape(1, 1, T, T)
    if hidden_keys is not None:
        hide = hide | hidden_keys.reshape(B, 1, 1, T)
    return hide.where(-1e30, scores)


def cross_entropy(logits, tgt, valid):
    x = logits.float()
    m = x.max(-1, keepdim=True).detach()
    lse = ((x - m).exp().sum(-1)).log() + m.squeeze(-1)
    nll = lse - x.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    return valid.where(nll, 0).sum() / valid.sum()


def attention_zloss(lses):
    s = Tensor.stack(*lses).sum(0)
    return (s ** 2).sum(1).mean()


def next_embed_loss(pred, target, valid, kind="mse"):
    d = pred - target.detach()
    err = d.square() if kind == "mse" else d.abs()
    per_pos = err.mean(-1)
    return valid.where(per_pos, 0).sum() / valid.sum()


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    out = ce
    for w, c in ((zloss_weight, zloss), (next_embed_weight, next_embed)):
        if w != 0:
            out = out + c * w
    return out
