"""Assignment 3's checks: the learning-rate schedule, gradient clipping, one AdamW step.

Same rules as checks.py: random inputs fixed by the seed, numpy oracles written out here in
float64, one line naming the mistake when a wrong value matches a classic one.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar.assignments.calls import Arg, Cfg
from tinyar.assignments.checking import Failed, arr, close, kind, parts, scalar, shaped


# ── oracles ──────────────────────────────────────────────────────────────────────────────

def lr_oracle(step: int, lr: float, warmup: int, steps: int, min_lr_ratio: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    floor = lr * min_lr_ratio
    progress = min((step - warmup) / max(1, steps - warmup), 1.0)
    return floor + (lr - floor) * (1 + math.cos(math.pi * progress)) / 2


def adamw_oracle(p, g, m, v, step, lr, b1, b2, eps, wd):
    p, g, m, v = (x.astype(np.float64) for x in (p, g, m, v))
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    return p - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p), m, v


# ── the checks ───────────────────────────────────────────────────────────────────────────

def check_schedule(fns, rng: np.random.Generator) -> None:
    lr_at = fns["lr_at"]
    configs = [(3e-4, 30, 300, 0.1), (1e-3, 0, 100, 0.0), (2e-3, 5, 5, 0.5), (1.0, 1, 10, 1.0)]
    configs.append((float(rng.uniform(1e-4, 1e-2)), int(rng.integers(1, 50)), int(rng.integers(60, 400)),
                    float(rng.uniform(0, 1))))
    for lr, warmup, steps, ratio in configs:
        cfg = Cfg(lr=lr, warmup=warmup, steps=steps, min_lr_ratio=ratio)
        probe = sorted({0, 1, max(warmup - 1, 0), warmup, warmup + 1, (warmup + steps) // 2, steps - 1, steps,
                        steps + 7, int(rng.integers(0, steps + 10))})
        for s in probe:
            got = lr_at(s, cfg)
            if kind(got) not in ("float", "int", "float64", "float32"):
                raise Failed(f"lr_at must return a float, got {kind(got)}")
            floor, p = lr * ratio, (s - warmup) / max(1, steps - warmup)
            mistakes = {}
            if s < warmup:
                mistakes["the warmup is off by one: step s gives lr * (s+1) / warmup, so step 0 already moves"] = \
                    lr * s / warmup
            else:
                mistakes["the cosine ends at 0: it must end at the floor lr * min_lr_ratio"] = \
                    lr * (1 + math.cos(math.pi * min(p, 1.0))) / 2
                mistakes["after cfg.steps the cosine went up again: hold the floor (clamp the progress at 1)"] = \
                    floor + (lr - floor) * (1 + math.cos(math.pi * p)) / 2
                mistakes["the cosine runs over cfg.steps: it runs over the steps after the warmup"] = \
                    floor + (lr - floor) * (1 + math.cos(math.pi * min(s / max(1, steps), 1.0))) / 2
            close(float(got.value), lr_oracle(s, lr, warmup, steps, ratio), f"lr_at({s}) with lr={lr:g}, "
                  f"warmup={warmup}, steps={steps}, min_lr_ratio={ratio:g}", mistakes, rtol=1e-6)


def check_clip(fns, rng: np.random.Generator) -> None:
    clip = fns["clip_grad_norm_"]
    shapes = [(int(rng.integers(1, 6)), int(rng.integers(1, 6))), (int(rng.integers(1, 9)),), (2, 3, 2)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    for max_norm in (norm / 3, norm * 2, 0.0):       # clipped, left alone (never scaled up), clipping off
        out = clip([Arg(p, grad_of=g) for p, g in zip(params, grads)], max_norm)
        what = f"clip_grad_norm_ with max_norm={max_norm:.4g} (the global norm is {norm:.4g})"
        scale = min(1.0, max_norm / (norm + 1e-6)) if max_norm > 0 else 1.0
        close(scalar(out, "clip_grad_norm_'s result"), norm, f"{what}: the returned norm",
              {"that is the norm after clipping: return the norm before": norm * scale,
               "that is the squared norm (take the square root)": norm ** 2})
        if any(a is None for a in out.after):
            raise Failed("every p.grad must still be a Tensor after clipping")
        for i, (g, after) in enumerate(zip(grads, out.after)):
            shaped(after, g.shape, f"p.grad of parameter {i} after clipping")
            if np.allclose(after, g * scale, rtol=1e-4, atol=1e-6):
                continue
            own = min(1.0, max_norm / (math.sqrt(float((g.astype(np.float64) ** 2).sum())) + 1e-6))
            why = ""
            if max_norm > 0 and np.allclose(after, g * own, rtol=1e-4, atol=1e-6):
                why = ": each parameter was clipped on its own norm (clip by the global norm of all gradients)"
            elif max_norm > 0 and np.allclose(after, g * max_norm / (norm + 1e-6), rtol=1e-4, atol=1e-6):
                why = ": the gradients were scaled up to max_norm (only ever scale down: min(1, ...))"
            elif max_norm == 0:
                why = ": max_norm 0 means no clipping"
            raise Failed(f"{what}: p.grad of parameter {i} is wrong{why}")


def check_adamw(fns, rng: np.random.Generator) -> None:
    step_fn = fns["adamw_step"]
    for trial, wd in enumerate((0.1, 0.0)):
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 7)))
        p = rng.standard_normal(shape).astype(np.float32)
        m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        lr, b1, b2, eps = float(rng.uniform(1e-3, 1e-1)), 0.9, 0.95, 1e-8
        if trial:
            b1, b2, eps = float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.999)), 1e-3
        for step in (1, 2, 3):                       # moments carried from one step to the next
            g = rng.standard_normal(shape).astype(np.float32)
            out = parts(step_fn(Arg(p), Arg(g), Arg(m), Arg(v), step, lr, b1, b2, eps, wd), 3, "adamw_step")
            got = [shaped(arr(o, f"adamw_step's {n}"), shape, f"adamw_step's {n}") for o, n in zip(out, ("p'", "m'", "v'"))]
            want = adamw_oracle(p, g, m, v, step, lr, b1, b2, eps, wd)
            l2 = adamw_oracle(p, g + wd * p, m, v, step, lr, b1, b2, eps, 0.0)   # Adam with L2 in the gradient
            what = f"adamw_step at step {step} (lr={lr:.3g}, b1={b1:.3g}, b2={b2:.3g}, eps={eps:g}, weight_decay={wd:g})"
            for i, name in ((1, "m'"), (2, "v'")):
                if not np.allclose(got[i], want[i], rtol=1e-4, atol=1e-7):
                    raise Failed(f"{what}: the moment {name} is wrong" + (
                        ": the weight decay went into the gradient (L2, as in Adam): AdamW decays the weights "
                        "separately" if wd and np.allclose(got[i], l2[i], rtol=1e-4, atol=1e-7) else ""))
            if not np.allclose(got[0], want[0], rtol=1e-4, atol=1e-6):
                mh, vh = want[1] / (1 - b1 ** step), want[2] / (1 - b2 ** step)
                known = {"no bias correction (divide m by 1 - b1^step and v by 1 - b2^step)":
                         p - lr * (want[1] / (np.sqrt(want[2]) + eps) + wd * p),
                         "eps went inside the square root": p - lr * (mh / np.sqrt(vh + eps) + wd * p),
                         "the weight decay is missing": p - lr * mh / (np.sqrt(vh) + eps),
                         "the weight decay was scaled by the Adam step, not by lr alone":
                         p - lr * mh / (np.sqrt(vh) + eps) * (1 + wd)}
                why = next((k for k, x in known.items() if np.allclose(got[0], x, rtol=1e-4, atol=1e-6)), "")
                raise Failed(f"{what}: the new weights are wrong" + (f": {why}" if why else ""))
            p, m, v = (w.astype(np.float32) for w in want)


CHECKS = {"schedule": check_schedule, "clip": check_clip, "adamw": check_adamw}
