"""Classic mistake: each layer's log-sum-exp is squared and then summed over layers;
x-transformers sums over layers first and squares the sum. Must fail task zloss only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def attention_zloss(lses):
    total = (lses[0] * lses[0]).sum(1).mean()
    for lse in lses[1:]:
        total = total + (lse * lse).sum(1).mean()
    return total
