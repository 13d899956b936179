"""What every graded check is built from: Failed, and helpers that turn what a submission
returned (an Out, calls.py) into numpy or a one-line Failed saying what is wrong."""
from __future__ import annotations

import numpy as np

from tinyar.assignments.calls import Out


class Failed(AssertionError):
    """The submission gave a wrong answer; the message says what and, if known, why."""


# ── helpers ──────────────────────────────────────────────────────────────────────────────

def kind(x) -> str:
    return x.kind if isinstance(x, Out) else type(x).__name__


def arr(x, what: str) -> np.ndarray:
    if kind(x) != "tensor":
        raise Failed(f"{what} must be a tinygrad Tensor, got {kind(x)}")
    return x.value


def scalar(x, what: str) -> float:
    a = arr(x, what)
    if a.shape != ():
        raise Failed(f"{what} must be a scalar Tensor of shape (), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise Failed(f"{what} must be a float Tensor, got dtype {a.dtype}")
    return float(a)


def shaped(a: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    if a.shape != shape:
        raise Failed(f"{what} has shape {a.shape}, expected {shape}")
    return a


def parts(out, n: int, what: str) -> list:
    if kind(out) != "tuple" or len(out.items) != n:
        raise Failed(f"{what} must return a tuple of {n}, got {kind(out)}"
                     + (f" of {len(out.items)}" if kind(out) == "tuple" else ""))
    return out.items


def close(got: float, want: float, what: str, mistakes: dict[str, float] | None = None, rtol=1e-4) -> None:
    """got ≈ want (nan where nan is expected), else Failed naming the classic mistake whose value got matches."""
    if np.isnan(want) and np.isnan(got):
        return
    if np.isfinite(got) and abs(got - want) <= rtol * abs(want) + 1e-6:
        return
    why = next((m for m, v in (mistakes or {}).items()
                if (np.isnan(v) and np.isnan(got)) or abs(got - v) <= rtol * abs(v) + 1e-6), None)
    raise Failed(f"{what} = {got:.6g}, expected {want:.6g}" + (f": {why}" if why else ""))


def grads(out: Out, n: int, what: str) -> list[np.ndarray]:
    if out.grads is None or len(out.grads) != n:
        raise Failed(f"no gradient through {what} ({out.grad_error or 'not a float scalar'}); compute it with tinygrad ops")
    return out.grads


def rows_without_0(rng: np.random.Generator, B: int, T: int, frac: float) -> np.ndarray:
    """A random (B,T) bool mask that never marks position 0."""
    m = rng.random((B, T)) < frac
    m[:, 0] = False
    return m
