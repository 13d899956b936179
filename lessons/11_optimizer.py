"""Lesson 11: AdamW, by hand.

Lesson 9's step ends in an AdamW update. Per weight w with clipped gradient g, at step t:
  m = b1 m + (1-b1) g            the gradient's running mean (first moment)
  v = b2 v + (1-b2) g^2          its running mean square (second moment)
  m^ = m / (1-b1^t), v^ = v / (1-b2^t)   bias correction: m and v start at 0
  w = w - lr (m^ / (sqrt(v^) + eps) + wd w)    decay applied to w itself, "decoupled"
tinyar uses b1 0.9, b2 0.95, eps 1e-8, wd 0.1 on matrices only (Config.weight_decay).

Look at: four steps by hand in numpy matching the trainer's; the first step moving every
weight by lr (m^/sqrt(v^) = g/|g| once bias-corrected); a row with no gradient (MASK's
embedding: MASK is never an input here) shrinking by exactly (1 - lr wd) a step.
Run: python lessons/11_optimizer.py
"""
from _common import CFG, B, T, check

import numpy as np

from tinyar.data import MASK, Corpus, default_corpus
from tinyar.loss import autoregressive_loss
from tinyar.train import Trainer, lr_at

b1, b2, eps, wd = 0.9, 0.95, 1e-8, CFG.weight_decay   # what Trainer hands to tinygrad's AdamW
trainer = Trainer(CFG)                                # the course model's loss and schedule
params, corpus, rng = trainer.params, Corpus(default_corpus(), T), np.random.default_rng(0)
decay = [wd if p.ndim >= 2 else 0.0 for p in params]  # norm scales and biases are not decayed
w = [p.numpy().astype(np.float64) for p in params]
m, v = [np.zeros_like(x) for x in w], [np.zeros_like(x) for x in w]
mask_row = w[0][MASK].copy()                          # params[0] is the token embedding (V, D)
assert params[0].shape == (CFG.vocab, CFG.dim)


def clipped_gradients(batch: np.ndarray) -> list[np.ndarray]:
    """The gradient the trainer's step will use, computed outside it, clipped to norm grad_clip."""
    for p in params:
        p.grad = None
    autoregressive_loss(trainer.model, batch)["total"].backward()
    g = [p.grad.numpy().astype(np.float64) for p in params]
    norm = np.sqrt(sum((x ** 2).sum() for x in g))
    return [x * min(1.0, CFG.grad_clip / (norm + 1e-6)) for x in g]


for t in range(1, 5):
    batch, lr = corpus.batch(rng, B), lr_at(t - 1, CFG)
    g, before = clipped_gradients(batch), [x.copy() for x in w]
    for i in range(len(w)):
        m[i] = b1 * m[i] + (1 - b1) * g[i]
        v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
        m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
        w[i] = w[i] - lr * (m_hat / (np.sqrt(v_hat) + eps) + decay[i] * w[i])
    trainer.train_step(batch, None)
    ours = [p.numpy() for p in params]
    worst = max(np.abs(a - b).max() for a, b in zip(ours, w)) / lr
    print(f"step {t}: lr {lr:.2e}, largest |trainer - by hand| = {worst:.1e} lr")
    check(f"step_{t}_by_hand_vs_trainer_in_lr", worst, 0.0, 1e-3)
    if t == 1:   # m^ = g and v^ = g^2: every weight whose |g| >> eps moves by lr (plus decay)
        moved = np.concatenate([(np.abs(a - b + lr * d * b) / lr)[np.abs(gi) > 1e-4]
                                for a, b, d, gi in zip(w, before, decay, g)])
        print(f"step 1 moved weights by {moved.min():.4f} .. {moved.max():.4f} lr "
              f"(without bias correction: (1-b1)/sqrt(1-b2) = {(1 - b1) / np.sqrt(1 - b2):.3f} lr)")
        check("first_step_move_in_lr_min", moved.min(), 1.0, 1e-3)
        check("first_step_move_in_lr_max", moved.max(), 1.0, 1e-3)

shrink = np.prod([1 - lr_at(s, CFG) * wd for s in range(4)])
print(f"MASK's embedding row: norm {np.linalg.norm(mask_row):.5f} -> {np.linalg.norm(ours[0][MASK]):.5f}, "
      f"no gradient, only the decay")
check("mask_row_shrink_minus_(1-lr*wd)^4", np.abs(ours[0][MASK] / mask_row - shrink).max(), 0.0, 1e-6)
opt = trainer.opt.optimizers[0]
check("adam_b1_power_after_4_steps", opt.b1_t.item(), b1 ** 4, 1e-6)   # tinygrad's bias-correction counter

# Exercises (answers in lessons/README.md)
# 1. Without bias correction, how far would the first step move a weight if b2 were
#    0.999 (PyTorch's default) instead of 0.95?
# 2. A matrix weight that never gets a gradient: how many steps at lr 1e-2 halve it?
