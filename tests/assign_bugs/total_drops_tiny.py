"""Mistake: weights below a threshold count as "off", so a tiny weight drops its component.
Must fail task total only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    total = ce
    if abs(zloss_weight) > 1e-3:
        total = total + zloss_weight * zloss
    if abs(next_embed_weight) > 1e-3:
        total = total + next_embed_weight * next_embed
    return total
