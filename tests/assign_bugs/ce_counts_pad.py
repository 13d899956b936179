"""Classic mistake: the cross-entropy averages over every position, PAD targets included.
Must fail task cross_entropy only."""
from tinyar.loss import (apply_mask, attention_zloss, choose_mask_positions, cross_entropy,  # noqa: F401
                         next_embed_loss, num_masked, replace_masked, shift, total_loss)
from tinyar.model import mask_scores  # noqa: F401


def cross_entropy(logits, tgt, valid):
    logp = logits.log_softmax(-1)
    return -(logp * tgt.one_hot(logits.shape[-1])).sum(-1).mean()
