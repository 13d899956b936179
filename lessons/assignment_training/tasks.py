"""tinyar assignment 3: the training loop's arithmetic.

Replace every `raise NotImplementedError(...)` with your code; keep the names and
signatures. lr_at works on plain floats; clip_grad_norm_ and adamw_step on tinygrad
Tensors. The docstrings are the specification, lessons/ASSIGNMENTS.md the contracts.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                 # every task: a table of points
    python cli.py grade path/to/tasks.py --task adamw    # one task
"""
from __future__ import annotations

import math

from tinygrad import Tensor

from tinyar.config import Config

ASSIGNMENT = "training"   # tells the grader which tasks this file answers


# ── task schedule: 30 points ──────────────────────────────────────────────────────────
def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup to cfg.lr over cfg.warmup steps, then cosine down to lr * min_lr_ratio.
    step counts from 0 -> a float

    Warmup: step s < warmup gives lr (s+1)/warmup (the first step already moves). Then the
    cosine runs over the remaining steps - warmup steps (at least 1) from lr to the floor
    lr * min_lr_ratio, and stays at the floor after cfg.steps. warmup 0: no warmup."""
    raise NotImplementedError("schedule: linear warmup to cfg.lr over cfg.warmup steps, then cosine down to lr * min_lr_ratio (lesson 9, the training loop)")


# ── task clip: 30 points ──────────────────────────────────────────────────────────────
def clip_grad_norm_(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale every gradient so their global L2 norm is at most max_norm; return the norm before.
    params: Tensors whose .grad is set -> () float Tensor

    The norm is over all gradients together (not per parameter). Each p.grad is replaced by
    p.grad * min(1, max_norm / (norm + 1e-6)): never scaled up. max_norm 0: no clipping."""
    raise NotImplementedError("clip: scale every .grad by min(1, max_norm / (global L2 norm + 1e-6)); return the norm before (lesson 9)")


# ── task adamw: 40 points ─────────────────────────────────────────────────────────────
def adamw_step(p: Tensor, g: Tensor, m: Tensor, v: Tensor, step: int, lr: float, b1: float = 0.9,
               b2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW update of one parameter. p, g, m, v: same shape, float; step counts from 1.
    -> (p', m', v'), new Tensors (nothing is updated in place)

    m' = b1 m + (1-b1) g,   v' = b2 v + (1-b2) g^2            (the moments)
    m^ = m' / (1 - b1^step), v^ = v' / (1 - b2^step)         (bias correction)
    p' = p - lr (m^ / (sqrt(v^) + eps) + weight_decay p)      (decay decoupled from the moments)"""
    raise NotImplementedError("adamw: Adam moments with bias correction, then a decoupled weight decay step (lesson 9, the training loop)")
