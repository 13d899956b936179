"""Lesson 7: the attention z-loss.

Every attention row has a softmax normaliser lse = log sum_j exp(score_j) (lesson 4). The
z-loss keeps these near 0, so attention logits can't drift to sizes where float rounding
bites. x-transformers' formula, which tinyar follows: per query position and head, SUM lse
over the layers first, then square; sum over heads; mean over batch and positions.
A per-layer version would square each layer's lse separately.

Look at: an untrained model's z-loss predicted from lse_i ≈ ln(i+1); a run with the z-loss
against one without; the trained layers' lse having opposite signs: summing before squaring
lets layers cancel, so the per-layer version stays large.
Run: python lessons/07_zloss.py
"""
from _common import CFG, B, T, check, course_trainer

import math

import numpy as np
from tinygrad import Tensor

from tinyar.data import Corpus, default_corpus
from tinyar.loss import attention_zloss
from tinyar.model import Decoder
from tinyar.train import Trainer, train


def zlosses(model, batches) -> tuple[float, float, np.ndarray]:
    """-> (x-transformers' z-loss, per-layer version, mean lse per layer), averaged over batches"""
    lses = np.stack([np.stack([l.numpy() for l in model(Tensor(b[:, :-1]))[1]]) for b in batches])  # (N,L,B,H,T)
    summed = (lses.sum(1) ** 2).sum(2).mean()         # sum layers, square, sum heads, mean the rest
    per_layer = (lses ** 2).sum(3).mean((0, 2, 3)).sum()
    return summed, per_layer, lses.mean((0, 2, 3, 4))


corpus = Corpus(default_corpus(), T)
batches = corpus.val_batches(4, B)
fresh = Decoder(CFG)
summed, per_layer, _ = zlosses(fresh, batches[:1])
library = attention_zloss(fresh(Tensor(batches[0][:, :-1]))[1]).item()
check("by_hand_vs_library", abs(summed - library), 0.0, 1e-3)
# Untrained, lse_i ≈ ln(i+1) in every layer and head (lesson 4), so sum-then-square gives
# H * (L ln(i+1))^2 per position and the per-layer version H * L * ln(i+1)^2, 1/L of it (here half).
H, L = CFG.heads, CFG.depth
mean_sq_log = np.mean([math.log(i + 1) ** 2 for i in range(T)])
check("untrained_zloss", summed, H * L * L * mean_sq_log, 0.3)      # expect ≈ 17.5
check("untrained_per_layer", per_layer, H * L * mean_sq_log, 0.2)   # expect ≈ 8.8

# Train with --zloss 1e-3 (ten times the usual 1e-4, so 300 steps show it clearly); compare with
# the course model, the same run without it.
base = course_trainer()
W = 1e-3
trainer = Trainer(CFG.replace(zloss_weight=W))
rows = list(train(trainer, corpus))
print("z-loss during the run:", [round(r["zloss"], 2) for r in rows if r["kind"] == "train"])
results = {}
for name, t in (("no z-loss", base), (f"z-loss {W:g}", trainer)):
    summed, per_layer, layer_lse = zlosses(t.model, batches)
    ce = t.evaluate(corpus.val_batches(CFG.eval_batches, B))["val_ce"]
    results[name] = (summed, per_layer, layer_lse, ce)
    print(f"{name:10}: z-loss {summed:6.2f}, per-layer {per_layer:6.2f}, mean lse per layer "
          f"{[round(float(x), 2) for x in layer_lse]}, val ce {ce:.3f}")
(z0, _, _, ce0), (z1, p1, lse1, ce1) = results.values()
# How far 300 steps get depends on float rounding (the runs diverge): 0.15 on DEV=CPU, 0.14 on DEV=CL.
check("zloss_ratio_with_vs_without", z1 / z0, 0.2, 0.15)
check("val_ce_cost", ce1 - ce0, 0.02, 0.05)                            # nearly free: ≈ 0.02 nats
check("layer0_lse_times_layer1_lse_with", lse1[0] * lse1[1], 0.0, op="<")  # opposite signs: they cancel
# With two layers, (a + b)^2 < a^2 + b^2 exactly when a*b < 0: per-layer over summed is above 1
# only if the layers cancel. Untrained (a = b) it was 0.5; with the z-loss 3.7 (CPU), 4.3 (CL).
check("per_layer_over_summed_with", p1 / z1, 1.0, op=">")

# Exercises (answers in lessons/README.md)
# 1. Predict the untrained z-loss and its per-layer version at depth 4 (H = 2, T = 8).
# 2. With three layers whose lse are 1, 1 and -2, what are the summed and per-layer values?
