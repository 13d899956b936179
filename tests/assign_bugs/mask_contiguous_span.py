"""Mistake: each row masks one contiguous span of k positions (wrapping around inside 1..T-1),
starting at a uniform random place. The count, range and distinctness are right and every
position is masked equally often; but only T-1 of the C(T-1, k) sets can ever come up.
Must fail task mask_positions only."""
import numpy as np

from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def choose_mask_positions(rng, B, T, p):
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    if k > 0:
        start = rng.integers(0, T - 1, (B, 1))
        mask[np.arange(B)[:, None], 1 + (start + np.arange(k)) % (T - 1)] = True
    return mask
