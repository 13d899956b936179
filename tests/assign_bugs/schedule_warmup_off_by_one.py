"""Classic mistake: the warmup gives lr * step / warmup, so step 0 trains at lr 0 (a wasted
step) and the warmup ends one step late. Must fail task schedule only."""
import math

from tinyar.assignments.training import adamw_step  # noqa: F401
from tinyar.train import clip_grad_norm_, lr_at  # noqa: F401

ASSIGNMENT = "training"


def lr_at(step, cfg):
    if step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    progress = min((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), 1.0)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))
