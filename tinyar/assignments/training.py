"""The answer key of assignment 3's optimizer task: one AdamW step written out.

The trainer uses tinygrad's AdamW (tinyar/train.py); tests/test_assign.py checks that this
step gives the same weights as that optimizer, step after step, so the key can't drift.
"""
from __future__ import annotations

from tinygrad import Tensor


def adamw_step(p: Tensor, g: Tensor, m: Tensor, v: Tensor, step: int, lr: float, b1: float = 0.9,
               b2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """One AdamW update of one parameter. p, g, m, v: same shape, float; step counts from 1.
    -> (p', m', v'), new Tensors (nothing is updated in place)

    m' = b1 m + (1-b1) g,   v' = b2 v + (1-b2) g^2            (the moments)
    m^ = m' / (1 - b1^step), v^ = v' / (1 - b2^step)         (bias correction)
    p' = p - lr (m^ / (sqrt(v^) + eps) + weight_decay p)      (decay decoupled from the moments)"""
    # BEGIN TASK adamw
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g * g)
    m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    return p - lr * (m_hat / (v_hat.sqrt() + eps) + weight_decay * p), m, v
    # END TASK adamw
