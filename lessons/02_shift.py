"""Lesson 2: the shift, or teacher forcing.

A window of T+1 tokens gives T training examples at once: the inputs are its first T tokens,
the targets its last T, so the target at position t is the token that follows input t.
One forward pass predicts every position in parallel; what keeps position t from peeking at
its own answer is causal attention: position t only ever sees inputs 0..t.

Look at: targets = inputs + 1 on counting data; which positions' logits move when one input
token changes (only that position and later ones).
Run: python lessons/02_shift.py
"""
from _common import CFG, T, check

import numpy as np
from tinygrad import Tensor

from tinyar.data import decode, encode
from tinyar.loss import shift
from tinyar.model import Decoder

# Counting data makes the shift visible: every target must be its input plus one.
tokens = np.arange(T + 1)[None] + np.array([[0], [100]])       # (2, T+1): 0..8 and 100..108
inp, tgt = shift(Tensor(tokens.astype(np.int32)))               # (2, T) each
print(f"window (B, T+1):\n{tokens}\ninputs (B, T):\n{inp.numpy()}\ntargets (B, T):\n{tgt.numpy()}")
check("max_abs_targets_minus_inputs_minus_1", np.abs(tgt.numpy() - inp.numpy() - 1).max(), 0)
check("predictions_per_batch", tgt.numel(), 2 * T)   # B*T examples from one (B, T+1) batch

# Causality. Two inputs that differ only at position 4: "the cat " vs "the bat ".
a, b = encode("the cat "), encode("the bat ")
changed = int(np.flatnonzero(a != b)[0])
model = Decoder(CFG)                                             # untrained is enough here
logits = model(Tensor(np.stack([a, b]).astype(np.int32)))[0].numpy()  # (2, T, V): both at once
moved = np.abs(logits[0] - logits[1]).max(-1)                   # (T,) largest change per position
for t in range(T):
    print(f"position {t}: input {decode(a[:t + 1])!r:12} vs {decode(b[:t + 1])!r:12} logits moved {moved[t]:.2e}")
check("changed_position", changed, 4)
check("logit_change_before_it", moved[:changed].max(), 0.0, 1e-6)  # the past can't see the future
check("logit_change_from_it_on", moved[changed:].min(), 0.0, op=">")

# Exercises (answers in lessons/README.md)
# 1. One (B, T+1) batch trains B*T predictions. How many would it train if the model were
#    trained to predict only the last byte of each window (B = 2, T = 8)?
# 2. Change "the bat " to "she cat ": which check stops the lesson, and which positions'
#    logits move?
