"""Lesson 12: evaluation: perplexity, bits per byte, and over-fitting.

Validation cross-entropy is the mean -ln p(next byte) over fixed windows from the last 10% of
the corpus, which training never reads. Two rescalings of it: perplexity exp(ce), the number
of equally likely bytes that would be as uncertain (untrained: 258); bits per byte ce / ln 2,
the size per byte of the best code built on the model's probabilities (8 = raw bytes).
Validation never masks, whatever --mlm says: it measures the task we care about (real text,
real context), the same way every time, so runs with different masking compare.

Look at: the course model's val ce by hand = the library's, as ppl and bits/byte; a model
trained with --mlm 0.25 evaluating exactly as without; a tiny corpus learnt by heart: the
loss on its training windows falling below 1 nat while the held-out loss, after the first
100 steps, stops improving: what it learns from then on is memorised, not general.
Run: python lessons/12_evaluation.py
"""
from _common import CFG, B, T, check, course_trainer

import math

import numpy as np
from tinygrad import Tensor

from tinyar.data import Corpus, default_corpus
from tinyar.train import Trainer, train

corpus, course = Corpus(default_corpus(), T), course_trainer()
val = corpus.val_batches(CFG.eval_batches, B)                       # 32 fixed (B, T+1) windows
ev = course.evaluate(val)
logp = np.concatenate([course.model(Tensor(b[:, :-1]))[0].log_softmax(-1).numpy() for b in val])  # (N,T,V)
tgt = np.concatenate([b[:, 1:] for b in val])                       # (N,T)
by_hand = -np.take_along_axis(logp, tgt[..., None], -1).mean()
print(f"course model: val ce {ev['val_ce']:.4f} nats/byte = perplexity {ev['val_ppl']:.2f} "
      f"= {ev['val_bpb']:.3f} bits/byte (untrained: ppl 258, 8.01 bits)")
check("val_ce_by_hand_vs_library", abs(by_hand - ev["val_ce"]), 0.0, 1e-4)
check("perplexity_is_exp_ce", ev["val_ppl"], math.exp(ev["val_ce"]), 1e-6 * ev["val_ppl"])
check("bits_per_byte_is_ce_over_ln2", ev["val_bpb"], ev["val_ce"] / math.log(2), 1e-9)

masked = Trainer(CFG.replace(mask_prob=0.25))                       # a config that masks in training
masked.load_state(course.state_arrays(), course.state_meta())       # ... holding the course weights
check("val_ce_with_mlm_0.25_minus_without", masked.evaluate(val)["val_ce"] - ev["val_ce"], 0.0, 1e-6)

# Over-fitting: 300 bytes (270 to train on, 30 held out), 1,500 steps = 89 passes over them.
tiny = Corpus(default_corpus()[:300], T)
trainer = Trainer(CFG.replace(steps=1500, eval_every=100, log_every=1500))
rng = np.random.default_rng(1)
seen = [tiny.batch(rng, B) for _ in range(CFG.eval_batches)]        # fixed windows it trains on
rows = []                                                           # (step, ce on seen windows, held-out ce)
for row in train(trainer, tiny):
    if row["kind"] == "val":
        rows.append((row["step"], trainer.evaluate(seen)["val_ce"], row["val_ce"]))
        if row["step"] % 300 == 0 or row["step"] == 100:
            print(f"step {row['step']:5}: ce on its training windows {rows[-1][1]:.3f}, held out {rows[-1][2]:.3f}")
held = [r[2] for r in rows]
print(f"held-out ce over the run: {min(held):.3f} .. {max(held):.3f}, at step 100 {held[0]:.3f}")
check("train_ce_at_end", rows[-1][1], 1.0, op="<")                  # expect ≈ 0.45: nearly by heart
check("held_out_minus_train_at_end", rows[-1][2] - rows[-1][1], 2.0, op=">")     # expect ≈ 2.7
check("held_out_best_gain_after_step_100", held[0] - min(held), 0.2, op="<")    # it stopped learning

# Exercises (answers in lessons/README.md)
# 1. A model reaches val ce 2.0 nats: what are its perplexity and bits per byte? At 1 bit per
#    byte, how small could it compress a 1 MB file?
# 2. Train on 2,000 bytes instead of 300: does the gap at the end grow or shrink, and why?
