"""Classic mistake: the shift is off by one, so each target is its own input (the model
learns to copy). Every other function is the reference. Must fail task shift only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def shift(tokens):
    return tokens[:, :-1], tokens[:, :-1]
