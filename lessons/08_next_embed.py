"""Lesson 8: the next-embed loss.

Besides the logits, a small head (Linear -> SiLU -> Linear) reads the final hidden state and
predicts the next token's embedding row, a vector instead of a choice among 258. The loss
compares it with the real row: 'mse' (tinyar's default) = mean squared error, 'l1'
(x-transformers' choice) = mean absolute error, over non-PAD positions and all D dims.
The target is detached: the loss may move the prediction toward the embedding, never the
embedding toward the prediction, or the cheapest fix would be to shrink every embedding
(and the head's output) toward 0, which predicts nothing. x-transformers' target also adds
the next position's embedding (its model runs on T+1 tokens); tinyar's is the token row only,
since the position part says nothing about which token comes next.

Look at: the library matching the formulas; each one's gradient (MSE: 2·error/N, L1:
sign(error)/N); the gradient reaching embedding rows used only as targets: 0 with the detach.
Run: python lessons/08_next_embed.py
"""
from _common import CFG, check

import numpy as np
from tinygrad import Tensor

from tinyar.data import PAD, encode
from tinyar.loss import autoregressive_loss, next_embed_loss, shift
from tinyar.model import Decoder

model = Decoder(CFG.replace(next_embed_head=True))          # the head exists even at weight 0
batch = np.stack([encode("the cat s"), encode("a dog ran")]).astype(np.int32)  # (B, T+1)
inp, tgt = shift(Tensor(batch))
_, _, hidden = model(inp)                                    # (B,T,D) final-norm state
pred = model.next_embed(hidden)                              # (B,T,D)
target = model.embed(tgt).detach()                           # (B,T,D) rows of the next tokens
valid = tgt != PAD                                           # (B,T) every target here is a byte
err = pred.numpy() - target.numpy()
mse, l1 = (err ** 2).mean(), np.abs(err).mean()
for kind, by_hand in (("mse", mse), ("l1", l1)):
    lib = next_embed_loss(pred, target, valid, kind).item()
    print(f"{kind}: by hand {by_hand:.6f}, library {lib:.6f}")
    check(f"{kind}_by_hand_vs_library", abs(by_hand - lib) / by_hand, 0.0, 1e-4)
full = autoregressive_loss(model, batch, next_embed_kind="mse")["next_embed"].item()
check("autoregressive_loss_reports_mse", abs(full - mse) / mse, 0.0, 1e-4)
# MSE pulls each error in proportion to its size, so small errors barely move (at this
# embedding scale, std 0.02, MSE is tens of times smaller than L1); L1 pulls every one equally.
N = err.size                                                 # B*T*D, every target valid here
g_mse, g_l1 = (next_embed_loss(pred, target, valid, k).gradient(pred)[0].numpy() for k in ("mse", "l1"))
check("mse_gradient_is_2_err_over_N", np.abs(g_mse * N / 2 - err).max(), 0.0, 1e-6)
check("l1_gradient_is_sign_err_over_N", np.abs(g_l1 * N - np.sign(err)).max(), 0.0, 1e-5)

# Why detach: the rows of bytes that occur only as targets ('s', 'n'), never as inputs.
ids_in, ids_out = set(inp.numpy().ravel().tolist()), set(tgt.numpy().ravel().tolist())
only_target = sorted(ids_out - ids_in)
print("bytes only among the targets:", only_target, repr(bytes(only_target).decode()))
attached = ((pred - model.embed(tgt)) ** 2).mean()          # the same MSE, by hand, without the detach
g_det, g_att = (loss.gradient(model.tok_emb)[0] for loss in (next_embed_loss(pred, target, valid), attached))
g_det, g_att = g_det.numpy()[only_target], g_att.numpy()[only_target]
print(f"gradient on those rows: detached {np.abs(g_det).max():.2e}, not detached {np.abs(g_att).max():.2e}")
check("target_only_rows_exist", len(only_target), 0, op=">")
check("gradient_on_target_rows_detached", np.abs(g_det).max(), 0.0)
check("gradient_on_target_rows_not_detached", np.abs(g_att).max(), 0.0, op=">")

# Exercises (answers in lessons/README.md)
# 1. Every error is 0.01: what are MSE and L1, and how much harder does L1 pull each one?
# 2. Remove the .detach() from `target`: which check fails?
