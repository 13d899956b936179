"""Mistake: one row of positions is drawn, and row b is that row shifted by b (inside 1..T-1).
Every row is right on its own and every position is masked equally often, but the rows are
not independent. Must fail task mask_positions only."""
import numpy as np

from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def choose_mask_positions(rng, B, T, p):
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    if k > 0:
        first = rng.permutation(T - 1)[:k]                      # 0-based in 1..T-1
        mask[np.arange(B)[:, None], 1 + (first[None] + np.arange(B)[:, None]) % (T - 1)] = True
    return mask
