"""Classic mistake: each gradient is clipped on its own norm instead of the global norm of
all of them, which changes the update's direction. Must fail task clip only."""
from tinygrad import Tensor

from tinyar.assignments.training import adamw_step  # noqa: F401
from tinyar.train import clip_grad_norm_, lr_at  # noqa: F401

ASSIGNMENT = "training"


def clip_grad_norm_(params, max_norm):
    norm = Tensor.stack(*[p.grad.square().sum() for p in params]).sum().sqrt()
    if max_norm > 0:
        for p in params:
            own = p.grad.square().sum().sqrt()
            p.grad = p.grad * (max_norm / (own + 1e-6)).minimum(1.0)
    return norm
