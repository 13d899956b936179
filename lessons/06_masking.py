"""Lesson 6: masking inputs during training, `replace` vs `fcm`.

With --mlm p, each row gets exactly floor(T*p) masked positions, drawn from 1..T-1. Two modes:
  replace: the input token there becomes MASK (256); the model sees that a token is missing.
  fcm:     the token stays, but no query may attend to that position as a key (x-transformers'
           "forgetful causal masking"); position 0 is never hidden, so every query sees a key.
Targets never change: the loss still covers all T targets, so masking makes training harder.

Look at: the masked inputs; how much the loss rises at masked positions, on the course model
(never masked) and on a model trained 300 steps with --mlm 0.25 in that mode: under replace
the byte to continue from is gone (+0.43) until training teaches the model to continue from
the bytes before it (+0.06); fcm keeps the byte in the position's own residual stream, so it
costs little either way. fcm with position 0 hidden gives nan, which the library refuses.
Run: python lessons/06_masking.py
"""
from _common import CFG, B, T, check, course_trainer

import numpy as np
from tinygrad import Tensor, TinyJit

from tinyar.data import VOCAB, Corpus, default_corpus
from tinyar.loss import autoregressive_loss, choose_mask_positions, num_masked, replace_masked
from tinyar.train import Trainer, train

P = 0.25
rng = np.random.default_rng(0)
mask = choose_mask_positions(rng, B, T, P)                        # (B, T) bool, True = masked
draws = choose_mask_positions(rng, 10_000, T, P)
check("rows_without_exactly_2_masked", (mask.sum(1) != num_masked(T, P)).sum(), 0)
check("position_0_masked_in_10000_rows", draws[:, 0].sum(), 0)
check("max_deviation_from_2/7_at_positions_1_to_7", np.abs(draws[:, 1:].mean(0) - 2 / 7).max(), 0.0, 0.02)

corpus = Corpus(default_corpus(), T)
batch = corpus.batch(rng, B, "val")                               # (B, T+1)
print(f"mask (1 = masked):\n{mask.astype(int)}\ninputs:\n{batch[:, :-1]}")
print(f"replace's inputs (MASK = 256):\n{replace_masked(Tensor(batch[:, :-1]), Tensor(mask)).numpy()}")
models = {"never masked": course_trainer().model}                   # the course model
for mode in ("replace", "fcm"):
    trainer = Trainer(CFG.replace(mask_prob=P, mask_mode=mode))   # val ce is never masked (lesson 12)
    print(f"--mlm {P} --mlm-mode {mode}: val ce", [round(r["val_ce"], 3) for r in train(trainer, corpus) if r["kind"] == "val"])
    models[f"trained with {mode}"] = trainer.model
nll = lambda z, tgt: -(z.log_softmax(-1) * tgt.one_hot(VOCAB)).sum(-1)   # (B,T,V), (B,T) -> (B,T) -log p(target)

# One batch is noisy: average the rise in loss over 128 validation batches, by position kind.
masks, windows = np.stack([choose_mask_positions(rng, B, T, P) for _ in range(128)]), [corpus.batch(rng, B, "val") for _ in range(128)]
before, rise = np.cumsum(masks, -1) == 0, {}                      # positions before the first mask
for mode, name in [(m, n) for m in ("replace", "fcm") for n in ("never masked", f"trained with {m}")]:
    model = models[name]
    hide = (lambda i, m: (replace_masked(i, m), None)) if mode == "replace" else (lambda i, m: (i, m))
    both = TinyJit(lambda x, m: Tensor.stack(nll(model(x[:, :-1])[0], x[:, 1:]), nll(model(*hide(x[:, :-1], m))[0], x[:, 1:])))
    losses = np.stack([both(Tensor(w), Tensor(m)).numpy() for w, m in zip(windows, masks)])    # (N,2,B,T)
    r = losses[:, 1] - losses[:, 0]                               # (N,B,T) masked minus unmasked
    rise[mode, name] = r[masks].mean()
    print(f"{mode:7} on the model {name:20}: loss rise before the first mask {r[before].mean():+.3f}, "
          f"at masked positions {r[masks].mean():+.3f}, later unmasked {r[~before & ~masks].mean():+.3f}")
    check(f"{mode}_{name.split()[0]}_rise_before_first_mask", np.abs(r[before]).max(), 0.0, 1e-4)  # causality
    if name.startswith("trained"):
        ce = autoregressive_loss(model, windows[0], mask_positions=masks[0], mask_mode=mode)["ce"].item()
        check(f"{mode}_ce_is_mean_over_all_targets", abs(ce - losses[0, 1].mean()), 0.0, 1e-4)
check("replace_rise_at_masked_never_masked", rise["replace", "never masked"], 0.43, 0.15)
check("replace_rise_at_masked_trained", rise["replace", "trained with replace"], 0.06, 0.04)
check("fcm_rise_at_masked_never_masked", rise["fcm", "never masked"], 0.07, 0.05)
check("fcm_rise_at_masked_trained", rise["fcm", "trained with fcm"], 0.03, 0.03)

bad = mask.copy()
bad[:, 0] = True                                                  # hide position 0 as well
try:
    autoregressive_loss(models["trained with fcm"], batch, mask_positions=bad, mask_mode="fcm")
    refused = False
except ValueError as e:
    refused = True
    print("the library refuses:", e)
logits = models["trained with fcm"](Tensor(batch[:, :-1]), Tensor(bad))[0].numpy()   # what it would have computed
print("query 0 with no key left, softmax over nothing -> logits", logits[0, 0, :3], "...")
check("library_refuses_fcm_position_0", refused, 1)
check("position_0_logits_all_nan", np.isnan(logits[:, 0]).all(), 1)

# Exercises (answers in lessons/README.md)
# 1. With T = 128 and --mlm 0.15, how many positions per row are masked?
# 2. Why must fcm never hide position 0, and why is it not masked under replace either?
