"""Mistake: the positions come from a copy of rng, so rng never moves on and every training
step masks the same positions. Any one call looks perfect. Must fail task mask_positions only."""
import copy

import numpy as np

from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def choose_mask_positions(rng, B, T, p):
    r = copy.deepcopy(rng)
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    if k > 0:
        np.put_along_axis(mask, np.argsort(r.random((B, T - 1)), axis=1)[:, :k] + 1, True, axis=1)
    return mask
