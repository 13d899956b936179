"""Lesson 6: masking inputs during training, `replace` vs `fcm`.

With --mlm p, each row gets exactly floor(T*p) masked positions, drawn from 1..T-1. Two modes:
  replace: the input token there becomes MASK (256); the model sees that a token is missing.
  fcm:     the token stays, but no query may attend to that position as a key (x-transformers'
           "forgetful causal masking"); position 0 is never hidden, so every query sees a key.
Targets never change: the loss still covers all T targets, so masking makes training harder.

Look at: the masked inputs; the same batch's loss in each mode; where the loss rises (at the
masked positions themselves under replace, since the byte to continue from is gone; fcm keeps
it in the position's own residual stream); fcm with position 0 hidden producing nan,
which the library refuses.
Run: python lessons/06_masking.py
"""
from _common import B, T, check, course_trainer

import numpy as np
from tinygrad import Tensor, TinyJit

from tinyar.data import VOCAB, Corpus, default_corpus
from tinyar.loss import autoregressive_loss, choose_mask_positions, num_masked, replace_masked

P = 0.25
rng = np.random.default_rng(0)
mask = choose_mask_positions(rng, B, T, P)                        # (B, T) bool, True = masked
draws = choose_mask_positions(rng, 10_000, T, P)
check("rows_without_exactly_2_masked", (mask.sum(1) != num_masked(T, P)).sum(), 0)
check("position_0_masked_in_10000_rows", draws[:, 0].sum(), 0)
check("max_deviation_from_2/7_at_positions_1_to_7", np.abs(draws[:, 1:].mean(0) - 2 / 7).max(), 0.0, 0.02)

# Masking only hurts a model that uses its context: take the course model (trained as in lesson 9).
corpus = Corpus(default_corpus(), T)
model = course_trainer().model

batch = corpus.batch(rng, B, "val")                               # (B, T+1)
print(f"mask (1 = masked):\n{mask.astype(int)}\ninputs:\n{batch[:, :-1]}")
print(f"replace's inputs (MASK = 256):\n{replace_masked(Tensor(batch[:, :-1]), Tensor(mask)).numpy()}")
ce = {"none": autoregressive_loss(model, batch)["ce"].item()}
for mode in ("replace", "fcm"):
    ce[mode] = autoregressive_loss(model, batch, mask_positions=mask, mask_mode=mode)["ce"].item()
print("this batch's ce:", {k: round(v, 4) for k, v in ce.items()}, "(16 targets: noisy, see the average below)")


@TinyJit
def per_position_nll(tokens: Tensor, mask: Tensor) -> Tensor:
    """-log p(target) at every position, no mask / replace / fcm. -> (3, B, T)"""
    inp, tgt = tokens[:, :-1], tokens[:, 1:]
    nll = lambda logits: -(logits.log_softmax(-1) * tgt.one_hot(VOCAB)).sum(-1)
    return Tensor.stack(nll(model(inp)[0]), nll(model(replace_masked(inp, mask))[0]), nll(model(inp, mask)[0]))


nll = per_position_nll(Tensor(batch), Tensor(mask)).numpy()
check("replace_ce_is_mean_over_all_targets", abs(ce["replace"] - nll[1].mean()), 0.0, 1e-4)
check("fcm_ce_is_mean_over_all_targets", abs(ce["fcm"] - nll[2].mean()), 0.0, 1e-4)

# One batch is noisy: average the rise in loss over 128 validation batches, by position kind.
masks = [choose_mask_positions(rng, B, T, P) for _ in range(128)]
rise = np.stack([per_position_nll(Tensor(corpus.batch(rng, B, "val")), Tensor(m)).numpy() for m in masks])
rise, masks = rise[:, 1:] - rise[:, :1], np.stack(masks)          # (N,2,B,T), (N,B,T)
before = np.cumsum(masks, -1) == 0                                # positions before the first mask
for i, mode in enumerate(("replace", "fcm")):
    print(f"{mode:8} loss rise: before the first mask {rise[:, i][before].mean():+.3f}, at masked "
          f"positions {rise[:, i][masks].mean():+.3f}, later unmasked {rise[:, i][~before & ~masks].mean():+.3f}")
check("rise_before_first_mask", np.abs(rise).max(1)[before].max(), 0.0, 1e-4)  # causality again
check("replace_rise_at_masked", rise[:, 0][masks].mean(), 0.2, op=">")       # expect ≈ +0.4
check("fcm_over_replace_rise_at_masked", rise[:, 1][masks].mean() / rise[:, 0][masks].mean(), 0.5, op="<")

bad = mask.copy()
bad[:, 0] = True                                                  # hide position 0 as well
try:
    autoregressive_loss(model, batch, mask_positions=bad, mask_mode="fcm")
    refused = False
except ValueError as e:
    refused = True
    print("the library refuses:", e)
logits = model(Tensor(batch[:, :-1]), Tensor(bad))[0].numpy()     # what it would have computed
print("query 0 with no key left, softmax over nothing -> logits", logits[0, 0, :3], "...")
check("library_refuses_fcm_position_0", refused, 1)
check("position_0_logits_all_nan", np.isnan(logits[:, 0]).all(), 1)
