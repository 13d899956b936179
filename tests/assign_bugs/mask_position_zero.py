"""Classic mistake: mask positions are drawn from 0..T-1, so position 0 (the one key every
query can always see under fcm) can be masked. Must fail task mask_positions only."""
import numpy as np

from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def choose_mask_positions(rng, B, T, p):
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    np.put_along_axis(mask, np.argsort(rng.random((B, T)), axis=1)[:, :k], True, axis=1)
    return mask
