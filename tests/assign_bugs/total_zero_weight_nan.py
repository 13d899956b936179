"""Mistake: every component is multiplied by its weight, also a weight of 0, so an unused
component that is nan or inf makes the total nan (0 * nan = nan). Must fail task total only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    return ce + zloss_weight * zloss + next_embed_weight * next_embed
