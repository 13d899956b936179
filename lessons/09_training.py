"""Lesson 9: the training loop.

Each step: draw a batch (and mask positions), compute every loss component, backpropagate
the weighted total, clip the global gradient norm, take an AdamW step at the scheduled
learning rate. Trainer.train_step is that step as one TinyJit function: the first calls
trace and compile it (the slow part), later calls replay the kernels, so a step takes
milliseconds. This run uses the full loss, as `python cli.py train --mlm 0.15 --zloss 1e-4
--next-embed 0.1` would, at the course's tiny size.

Look at: the learning-rate schedule; clipping scaling a gradient of norm 5 down to 1; the
table: ce falling from ln 258 ≈ 5.55 to below the bytes' unigram entropy (3.15, lesson 1),
which only a model that reads its context can do; and a loss spike: a row far above the
rows around it (step 60 on DEV=CPU and DEV=CL). Not a bug: with 16 targets a step, a batch of
indentation (the printed windows: runs of spaces) is the whole gradient, and at the peak lr
one AdamW step moves every weight by up to ~lr (lesson 11), enough to make the model expect
spaces everywhere. It recovers within a few steps. Spikes come at other steps with other
seeds and losses (the plain loss too); more tokens a step (--batch-size, --seq-len) make
one odd batch matter less.
Run: python lessons/09_training.py
"""
from _common import CFG, T, check

import math

import numpy as np

from rich.console import Console
from rich.table import Table
from tinygrad import Tensor

from tinyar.data import VOCAB, Corpus, default_corpus
from tinyar.train import Trainer, clip_grad_norm_, lr_at

cfg = CFG.replace(mask_prob=0.15, zloss_weight=1e-4, next_embed_weight=0.1)
print("learning rate:", {s: f"{lr_at(s, cfg):.2e}" for s in (0, 10, cfg.warmup, 150, cfg.steps)})
check("lr_first_step", lr_at(0, cfg), cfg.lr / cfg.warmup, 1e-12)          # linear warmup from lr/warmup
check("lr_after_warmup", lr_at(cfg.warmup, cfg), cfg.lr, 1e-12)            # the peak
check("lr_at_end", lr_at(cfg.steps, cfg), cfg.lr * cfg.min_lr_ratio, 1e-12)  # cosine down to 10%

p = Tensor([0.0, 0.0])
p.grad = Tensor([3.0, 4.0])                                          # a gradient of norm 5
norm = clip_grad_norm_([p], 1.0).item()
print(f"clipping: norm before {norm}, gradient after {p.grad.numpy()}")
check("norm_before_clipping", norm, 5.0, 1e-5)
check("norm_after_clipping", float((p.grad ** 2).sum().sqrt().item()), 1.0, 1e-5)

corpus = Corpus(default_corpus(), T)
trainer = Trainer(cfg)
decayed = len(trainer.opt.optimizers[0].params)
print(f"AdamW: weight decay on {decayed} matrices, none on {len(trainer.params) - decayed} norm scales and biases")
val_batches = corpus.val_batches(cfg.eval_batches, cfg.batch_size)
table = Table("step", "total", "ce", "z-loss", "next-emb", "|grad|", "lr", "val ce", title="training")
vals, seen = {}, {}                                                   # step -> val ce, step -> batch
for step in range(1, cfg.steps + 1):                                  # the loop, top to bottom
    batch, mask = trainer.next_batch(corpus)                          # (B, T+1), (B, T) bool: 1 masked per row
    row, seen[step] = trainer.train_step(batch, mask), batch          # every component, as floats
    if step == 1:
        first = row
    if step % cfg.log_every == 0 or step == 1:
        val = vals[step] = trainer.evaluate(val_batches)["val_ce"]    # no masking, fixed batches
        table.add_row(str(step), *(f"{row[k]:.4g}" for k in ("total", "ce", "zloss", "next_embed", "grad_norm")),
                      f"{row['lr']:.1e}", f"{val:.3f}")
Console().print(table)
spike = max((s for s in vals if s > cfg.warmup), key=vals.get)       # the worst row after warmup
print(f"worst val ce after warmup: {vals[spike]:.3f} at step {spike}; the windows of the 5 steps before it:")
print(" ", " ".join(repr(bytes(w.astype(np.uint8)).decode(errors="replace")) for s in range(spike - 4, spike + 1) for w in seen[s]))
check("first_step_ce", first["ce"], math.log(VOCAB), 0.1)            # expect ≈ 5.55, untrained
check("first_step_zloss", first["zloss"], 17.5, 0.5)                  # expect ≈ 17.5 (lesson 7)
check("first_step_total", first["total"], first["ce"] + 1e-4 * first["zloss"] + 0.1 * first["next_embed"], 1e-4)
check("final_val_ce", val, 3.15, op="<")                              # below the unigram entropy

# Exercises (answers in lessons/README.md)
# 1. What is the learning rate at step 160? (Work it out from lr_at, then print it.)
# 2. Set lr=3e-3 in cfg: does the table still show a spike, and where does val ce end?
