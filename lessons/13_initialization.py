"""Lesson 13: initialization, and the residual-scaled output projections.

tinyar starts every matrix at N(0, 0.02^2) (GPT-2's choice), norm scales at 1 and biases at 0,
except the two matrices per block that write into the residual stream, attention's to_out
and the MLP's fc2: they start at std 0.02 / sqrt(2 depth). Why: the residual stream is a sum,
x_L = x_0 + (what 2L sub-layers add). Independent random additions add their variances, so
with equal-sized additions the stream's change grows like sqrt(L); scaling each by
1/sqrt(2L) makes it the same for any depth, so one learning rate suits 2 blocks and 48.

Look at: the initial weights' spreads; the logits starting small (so ce starts at ln 258,
lesson 3); what 2 and 32 real blocks add to the same stream, with and without the scaling.
Run: python lessons/13_initialization.py
"""
from _common import CFG, B, D, T, check

import math

import numpy as np
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

from tinyar.data import Corpus, default_corpus
from tinyar.model import Block, Decoder, normal

model = Decoder(CFG)
weights = {k: v.numpy() for k, v in get_state_dict(model).items()}
for name in ("tok_emb", "blocks.0.attn.to_q.weight", "blocks.0.attn.to_out.weight", "blocks.0.ff.fc2.weight",
             "blocks.0.ff.fc2.bias", "blocks.0.attn_norm.weight"):
    print(f"  {name:28} {str(weights[name].shape):10} mean {weights[name].mean():+.4f} std {weights[name].std():.4f}")
out_std = 0.02 / math.sqrt(2 * CFG.depth)                           # 0.01 at depth 2
writers = np.concatenate([w.ravel() for k, w in weights.items() if k.endswith(("to_out.weight", "fc2.weight"))])
others = np.concatenate([w.ravel() for k, w in weights.items() if w.ndim == 2 and not k.endswith(("to_out.weight", "fc2.weight"))])
check("std_of_other_matrices", others.std(), 0.02, 0.0005)
check("std_of_residual_writers", writers.std(), out_std, 0.0005)

batch = Corpus(default_corpus(), T).batch(np.random.default_rng(0), B)
logits = model(Tensor(batch[:, :-1]))[0].numpy()                   # (B,T,V)
print(f"initial logits: std {logits.std():.4f} (0.02 * sqrt(D) = {0.02 * math.sqrt(D):.2f}: LayerNorm makes the hidden state unit-sized)")
check("initial_logit_std", logits.std(), 0.02 * math.sqrt(D), 0.01)

x0 = (model.embed(Tensor(batch[:, :-1])) + model.pos_emb).realize()   # (B,T,D) the stream before any block


def added_by(depth: int, scaled: bool) -> float:
    """std of what `depth` freshly initialised blocks add to the stream x0 (x_L - x_0)."""
    rng, x = np.random.default_rng(depth), x0
    for _ in range(depth):
        block = Block(CFG.replace(depth=depth), rng)                 # its writers: 0.02 / sqrt(2 depth)
        if not scaled:
            block.attn.to_out.weight, block.ff.fc2.weight = normal(rng, D, D), normal(rng, D, 4 * D)
        x = block(x, None)[0].realize()                              # same shapes: no new kernels
    return float((x - x0).numpy().std())


added = {(L, s): added_by(L, s) for L in (2, 32) for s in (True, False)}
for (L, s), a in added.items():
    print(f"{L:2} blocks, writers {'scaled  ' if s else 'at 0.02 '}: they add std {a:.5f} (the stream x0: {x0.numpy().std():.4f})")
check("scaled_32_over_2_blocks", added[32, True] / added[2, True], 1.0, 0.3)     # depth-independent
check("unscaled_32_over_2_blocks", added[32, False] / added[2, False], 4.0, 1.0)  # grows like sqrt(32/2)

# Exercises (answers in lessons/README.md)
# 1. What std do to_out and fc2 start at in a 12-block model?
# 2. Without the scaling, how much more would 128 blocks add than 2?
