"""Mistake: fcm hides the masked positions as queries (rows) instead of as keys (columns),
so every other query still attends to the hidden tokens. Must fail task fcm only."""
import math

from tinygrad import Tensor, dtypes

from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def mask_scores(scores, hidden_keys=None):
    B, _, T, _ = scores.shape
    visible = Tensor.ones(T, T, dtype=dtypes.bool).tril()
    if hidden_keys is not None:
        visible = visible & hidden_keys.logical_not().reshape(B, 1, T, 1)
    return visible.where(scores, -math.inf)
