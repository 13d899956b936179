"""Lesson 12: evaluation: perplexity, bits per byte, and over-fitting.

Validation cross-entropy is the mean -ln p(next byte) over fixed windows from the last 10% of
the corpus, which training never reads. Two rescalings of it: perplexity exp(ce), the number
of equally likely bytes that would be as uncertain (untrained: 258); bits per byte ce / ln 2,
the size per byte of the best code built on the model's probabilities (8 = raw bytes).
Validation never masks, whatever --mlm says: it measures the task we care about (real text,
real context), the same way every time, so runs with different masking compare.

Look at: the course model's val ce by hand = the library's, as ppl and bits/byte; a model
trained with --mlm 0.25 evaluating exactly as without; over-fitting: the same model trained on
135 bytes learns them by heart (ce on its training windows < 1 nat) while its ce on the
validation windows, best at step 100, climbs ~2 nats: it memorised, it did not generalise.
Run: python lessons/12_evaluation.py
"""
from _common import CFG, B, T, check, course_trainer

import math

import numpy as np
from tinygrad import Tensor, TinyJit

from tinyar.data import Corpus, default_corpus
from tinyar.train import Trainer

corpus, course = Corpus(default_corpus(), T), course_trainer()
val = corpus.val_batches(CFG.eval_batches, B)                       # 32 fixed (B, T+1) windows
ev = course.evaluate(val)
forward = TinyJit(lambda x: course.model(x)[0].realize())           # (B,T) -> (B,T,V), as in lesson 10
logits = np.concatenate([forward(Tensor(b[:, :-1])).numpy() for b in val]).astype(np.float64)   # (N,T,V)
logp = logits - logits.max(-1, keepdims=True)
logp -= np.log(np.exp(logp).sum(-1, keepdims=True))                 # log-softmax (lesson 3)
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

# Over-fitting: train the same model on 150 bytes (135 to train on), 600 steps = 71 passes over
# them, and evaluate it on the validation windows above, which it never saw.
tiny = Corpus(default_corpus()[:150], T)
trainer, rng = Trainer(CFG.replace(steps=600)), np.random.default_rng(1)
seen = [tiny.batch(rng, B) for _ in range(16)]                      # fixed windows it trains on
rows = []                                                           # (step, ce on seen windows, val ce)
for step in range(1, trainer.cfg.steps + 1):                        # lesson 9's loop
    trainer.train_step(*trainer.next_batch(tiny))
    if step % 100 == 0:
        rows.append((step, trainer.evaluate(seen)["val_ce"], trainer.evaluate(val)["val_ce"]))
        print(f"step {step}: ce on its training windows {rows[-1][1]:.3f}, on the validation windows {rows[-1][2]:.3f}")
held = [r[2] for r in rows]
print(f"the course model, trained on 4,800 bytes from all of the corpus: val ce {ev['val_ce']:.3f}")
check("train_ce_at_end", rows[-1][1], 1.0, op="<")                  # expect ≈ 0.6: nearly by heart
check("val_ce_minus_train_ce_at_end", rows[-1][2] - rows[-1][1], 3.0, op=">")   # expect ≈ 5.3
check("val_ce_rise_after_step_100", held[-1] - held[0], 1.0, op=">")           # expect ≈ 1.9
check("best_val_ce_step", rows[int(np.argmin(held))][0], 100)                   # it only got worse

# Exercises (answers in lessons/README.md)
# 1. A model reaches val ce 2.0 nats: what are its perplexity and bits per byte? At 1 bit per
#    byte, how small could it compress a 1 MB file?
# 2. Train on 1,500 bytes instead of 150: does the gap at the end grow or shrink, and why?
