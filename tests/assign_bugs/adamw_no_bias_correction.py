"""Classic mistake: no bias correction, so the first steps are far too small (m and v start
at 0). Must fail task adamw only."""
from tinyar.assignments.training import adamw_step  # noqa: F401
from tinyar.train import clip_grad_norm_, lr_at  # noqa: F401

ASSIGNMENT = "training"


def adamw_step(p, g, m, v, step, lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g * g)
    return p - lr * (m / (v.sqrt() + eps) + weight_decay * p), m, v
