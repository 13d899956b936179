"""Lesson 5: the decoder, layer by layer, and where its parameters are.

token embedding + position embedding -> depth x block -> final LayerNorm -> head -> logits.
A block is pre-norm: x + attention(norm(x)), then x + MLP(norm(x)), the MLP being
Linear(D, 4D) -> exact GELU -> Linear(4D, D). Each block also returns its attention lse.

Look at: the shapes after each step; the step-by-step result matching model(inp); the
parameter count from the formula; how much of a tiny model is its embedding and head.
Run: python lessons/05_decoder.py
"""
from _common import CFG, B, D, T, check

import numpy as np
from tinygrad import Tensor

from tinyar.data import VOCAB, Corpus, default_corpus
from tinyar.loss import shift
from tinyar.model import Decoder

model = Decoder(CFG)
batch = Corpus(default_corpus(), T).batch(np.random.default_rng(0), B)
inp, _ = shift(Tensor(batch))                                     # (B, T)

x = model.embed(inp) + model.pos_emb[:T]                         # (B,T,D): what + where
print(f"inputs {inp.shape} -> embeddings {x.shape}")
for i, block in enumerate(model.blocks):
    x, lse = block(x, None)
    print(f"block {i}: residual stream {x.shape}, attention lse {lse.shape} (B, H, T)")
hidden = model.norm(x)                                           # (B,T,D)
logits = model.head(hidden)                                      # (B,T,V): a score per next byte
print(f"final norm {hidden.shape} -> logits {logits.shape}")

ref_logits, ref_lses, ref_hidden = model(inp)
check("step_by_step_vs_model", (logits - ref_logits).abs().max().item(), 0.0, 1e-6)
check("lse_layers_returned", len(ref_lses), CFG.depth)
h = hidden.numpy()
check("final_norm_mean", np.abs(h.mean(-1)).max(), 0.0, 1e-4)    # LayerNorm: mean 0, std 1 per position
check("final_norm_std", h.std(-1).mean(), 1.0, 0.02)             # (scale starts at 1; eps pulls it a bit under)

# Parameters, counted by hand. Attention has 4 D x D matrices (q, k, v, out; no biases);
# the MLP has D x 4D and 4D x D matrices with biases; each norm has one scale vector.
def count(D: int, depth: int, T: int) -> dict[str, int]:
    per_block = 2 * D + 4 * D * D + (D * 4 * D + 4 * D) + (4 * D * D + D)
    return {"token embedding V*D": VOCAB * D, "position embedding T*D": T * D,
            f"{depth} blocks": depth * per_block, "final norm D": D, "head D*V": D * VOCAB}


def embedding_and_head_share(parts: dict[str, int]) -> float:
    return (parts["token embedding V*D"] + parts["head D*V"]) / sum(parts.values())


parts = count(D, CFG.depth, T)
for name, n in parts.items():
    print(f"  {name:24} {n:6,}")
check("num_params", model.num_params(), sum(parts.values()))     # expect 14,768
share = embedding_and_head_share(parts)
check("embedding_and_head_share", share, 0.56, 0.01)
# Embedding and head grow like D, the blocks like depth * D^2: in a wide, deep model they are
# a sliver. At D = 768 (GPT-2 small's width, our V = 258, T = 1024) the share by depth:
wide = {depth: embedding_and_head_share(count(768, depth, 1024)) for depth in (1, 2, 5, 6, 12)}
print("embedding + head at D = 768, by depth:", {k: f"{v:.2%}" for k, v in wide.items()})
check("depth_where_D768_share_drops_under_1%", min(k for k, v in wide.items() if v < 0.01), 6)

# Exercises (answers in lessons/README.md)
# 1. How many parameters has the model with dim=32 (depth 2, T 8)? Use count(), then check
#    with Decoder(CFG.replace(dim=32)).num_params().
