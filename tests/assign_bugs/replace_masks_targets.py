"""Classic mistake: in replace mode the targets get MASK instead of the inputs (the model
is trained to predict MASK). Must fail task replace only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def apply_mask(inp, tgt, mask, mode):
    if mode == "replace":
        return inp, replace_masked(tgt, mask), None
    return inp, tgt, mask
