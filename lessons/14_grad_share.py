"""Lesson 14: what each loss component does to the update (the gradient share).

The total is a sum, so its gradient is a sum: g = g_ce + g_z (+ g_ne), one vector over every
weight. `--grad-share` (tinyar/gradshare.py) measures at each log step, on the very batch and
mask the step trains on: each weighted term's norm |g_c|; its share <g_c, g> / |g|^2 (the
shares add up to 1, and a term pulling against the rest gets a negative one); the cosine of
g_ce with g_c; and the mean and max of each layer's attention log-sum-exp (lse), which the
z-loss squares (lesson 7).

Look at: the z-loss taking well under 1 % of the gradient, at right angles to ce (cos ≈ 0: a
constant added to all of a query's scores moves its lse but not its attention, so ce can't see
that direction; AdamW steps each weight by its own scale, so even a small gradient moves it) and
still pulling the mean lse to ≈ 0 and its own value ~10× down; with masking (mlm 0.25) the
instrument measuring the masked batch (its |g| is the step's own) and the z-loss doing the same.
Run: python lessons/14_grad_share.py
"""
from _common import CFG, T, check

import numpy as np

from tinyar.data import Corpus, default_corpus
from tinyar.train import Trainer, train

W = 1e-3   # ten times the usual 1e-4, as in lesson 7, so 300 tiny steps show it
corpus = Corpus(default_corpus(), T)


def run(**loss) -> tuple[list[dict], dict, float]:
    """A 300-step run with --grad-share -> (its log rows, their means over the second half, val ce)"""
    every = list(train(Trainer(CFG.replace(grad_share=True, eval_every=CFG.steps, **loss)), corpus))
    rows = [r for r in every if r["kind"] == "train"]
    late = [r for r in rows if r["step"] > CFG.steps // 2]
    means = {k: float(np.mean([r[k] for r in late])) for k in late[0] if k != "kind"}
    return rows, means, every[-1]["val_ce"]   # the last row: validation after the last step


runs = {"plain": run(), f"z-loss {W:g}": run(zloss_weight=W),
        "z-loss + mlm 0.25": run(zloss_weight=W, mask_prob=0.25)}
print(f"{'second half, mean':18} {'ce':>6} {'z-loss':>7} {'z share':>8} {'cos z':>6} {'lse mean':>8} "
      f"{'lse max':>7} {'val ce':>6}")
for name, (_, m, val_ce) in runs.items():
    print(f"{name:18} {m['ce']:6.3f} {m['zloss']:7.2f} {m.get('share_zloss', 0):8.4f} {m.get('cos_zloss', 0):6.2f} "
          f"{m['lse_mean']:8.2f} {m['lse_max']:7.2f} {val_ce:6.3f}")
(_, plain, ce0), (rows, z, ce1), (_, zm, ce2) = runs.values()
# (the ≈ values in the comments below were measured on DEV=CPU)
first = rows[0]   # step 1, measured before its update: the untrained weights
check("step1_shares_sum", first["share_ce"] + first["share_zloss"], 1.0, 1e-4)
check("step1_gnorm_total_over_grad_norm", first["gnorm_total"] / first["grad_norm"], 1.0, 1e-4)
check("zloss_gradient_share", abs(z["share_zloss"]), 0.05, op="<")       # ≈ 0.0015
check("abs_cos_ce_zloss", np.mean([abs(r["cos_zloss"]) for r in rows]), 0.5, op="<")   # ≈ 0.12
check("zloss_with_over_without", z["zloss"] / plain["zloss"], 0.5, op="<")             # ≈ 0.09
check("lse_mean_without", plain["lse_mean"], 0.7, op=">")                # ≈ 1.4
check("abs_lse_mean_with", abs(z["lse_mean"]), 0.5, op="<")              # ≈ 0.07
check("lse_max_with_over_without", z["lse_max"] / plain["lse_max"], 1.0, op="<")       # ≈ 0.7
check("val_ce_cost", abs(ce1 - ce0), 0.15, op="<")                       # nearly free
masked = runs["z-loss + mlm 0.25"][0]   # every logged step: the instrument saw the step's masked batch
check("masked_gnorm_total_vs_grad_norm", max(abs(r["gnorm_total"] / r["grad_norm"] - 1) for r in masked), 0.0, 1e-4)
check("masked_zloss_gradient_share", abs(zm["share_zloss"]), 0.05, op="<")    # ≈ 0.004, as without masking
check("masked_zloss_over_plain", zm["zloss"] / plain["zloss"], 0.5, op="<")   # ≈ 0.2
check("masked_val_ce_cost", abs(ce2 - ce0), 0.15, op="<")                       # validation never masks

# Exercises (answers in lessons/README.md)
# 1. On one batch the ce gradient has norm 3 and the weighted z-loss's norm 4, at right angles.
#    What are |g| and the two shares? And if the z-loss pulled exactly against ce?
# 2. Set W = 1e-4, the usual weight (python cli.py train --zloss 1e-4). Which check fails, and
#    what do the z share and the z-loss against the plain run's show instead?
