"""Classic mistake: a component gets the other's weight (zloss_weight on next_embed and
vice versa). Must fail task total only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    return ce + next_embed_weight * zloss + zloss_weight * next_embed
