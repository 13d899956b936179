"""tinyar assignment 1: the pieces of an autoregressive language model's loss.

Written by `python cli.py assign` from the reference solutions in tinyar/. Replace every
`raise NotImplementedError(...)` with your code; keep the names and signatures. Your
functions get tinygrad Tensors and return Tensors (choose_mask_positions: numpy arrays).
The docstrings are the specification, lessons/README.md the explanations.

Grade yourself from the repository root (each task runs on its own, with a time limit):
    python cli.py grade path/to/tasks.py                 # every task: a table of points
    python cli.py grade path/to/tasks.py --task shift    # one task
    TINYAR_SUBMISSION=path/to/tasks.py python -m pytest tests/test_assign_tasks.py -m shift
"""
from __future__ import annotations

import math

import numpy as np
from tinygrad import Tensor, dtypes

from tinyar.data import MASK, PAD
from tinyar.loss import num_masked


# ── task shift: 10 points ─────────────────────────────────────────────────────────────
def shift(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher forcing: predict token t+1 from tokens <= t. (B,T+1) int -> inp (B,T), tgt (B,T)

    Any B >= 1 and T >= 1; the ids keep their dtype."""
    raise NotImplementedError("shift: return the inputs (B,T) and the next-token targets (B,T) of a (B,T+1) window (lesson 2, the shift)")


# ── task mask_positions: 15 points ────────────────────────────────────────────────────
def choose_mask_positions(rng: np.random.Generator, B: int, T: int, p: float) -> np.ndarray:
    """Per row exactly num_masked(T, p) distinct positions, uniform over 1..T-1. -> (B,T) bool

    Returns a numpy bool array (not a Tensor). Position 0 is never chosen: under fcm it is the
    one key every query can always see. Every set of k positions is equally likely, each row
    is drawn independently of the others, and every random number comes from `rng` itself
    (no np.random.*, no copy of rng): the same rng state gives the same mask, and each call
    moves rng on, so the next batch gets new positions."""
    raise NotImplementedError("mask_positions: draw exactly num_masked(T, p) distinct positions per row, uniform over 1..T-1, rows independent, all from rng (lesson 6, masking)")


# ── task replace: 10 points ───────────────────────────────────────────────────────────
def replace_masked(inp: Tensor, mask: Tensor) -> Tensor:
    """`replace` mode: masked input tokens become MASK. (B,T) int, (B,T) bool -> (B,T) int"""
    raise NotImplementedError("replace: put MASK into the masked inputs; targets stay; fcm returns the mask as hidden keys (lesson 6, masking)")


def apply_mask(inp: Tensor, tgt: Tensor, mask: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Mask one batch. (B,T) int, (B,T) int, (B,T) bool -> inp', tgt', hidden_keys (B,T) bool or None

    'replace': the masked *inputs* become MASK and the targets stay, so the model still learns
    the true next token where its own input was hidden. 'fcm': the tokens stay; the masked
    positions come back as `hidden_keys`, which attention hides (model.mask_scores).
    Returns (Tensor, Tensor, hidden_keys): in 'replace' mode hidden_keys is None (no key is
    hidden; an all-False (B,T) mask means the same and is accepted), in 'fcm' mode it is
    `mask` itself, (B,T) bool."""
    if mode not in ("replace", "fcm"):
        raise ValueError(f"mask_mode must be 'replace' or 'fcm', got {mode!r}")
    raise NotImplementedError("replace: put MASK into the masked inputs; targets stay; fcm returns the mask as hidden keys (lesson 6, masking)")


# ── task fcm: 15 points ───────────────────────────────────────────────────────────────
def mask_scores(scores: Tensor, hidden_keys: Tensor | None = None) -> Tensor:
    """Hide the keys a query may not see: -inf where key j > query i (causal) or, under fcm
    masking, where key j is hidden. (B,H,T,T), (B,T) bool or None -> (B,H,T,T)"""
    raise NotImplementedError("fcm: set scores to -inf where key j > query i or key j is hidden (lessons 4 and 6, attention and masking)")


# ── task cross_entropy: 15 points ─────────────────────────────────────────────────────
def cross_entropy(logits: Tensor, tgt: Tensor, valid: Tensor) -> Tensor:
    """Mean of -log softmax(logits)[tgt] over valid positions. (B,T,V), (B,T), (B,T) bool -> () float

    tgt holds PAD where valid is False; at least one position is valid. The gradient reaches
    the logits: (softmax - onehot(tgt)) / n_valid at valid positions, 0 elsewhere.

    logsumexp subtracts the row max first, so 1000x logits don't overflow. (Equal to
    -log_softmax(logits)[tgt]; this form skips writing the (B,T,V) log-probabilities.)"""
    raise NotImplementedError("cross_entropy: mean of -log softmax(logits)[tgt] over valid positions, stable at large logits (lesson 3, cross-entropy)")


# ── task zloss: 15 points ─────────────────────────────────────────────────────────────
def attention_zloss(lses: list[Tensor]) -> Tensor:
    """x-transformers' attention z-loss: sum the per-layer log-sum-exp over layers, square,
    sum over heads, mean over batch and positions. depth x (B,H,T) -> () float (depth >= 1)"""
    raise NotImplementedError("zloss: sum the log-sum-exps over layers, then square, sum over heads, mean the rest (lesson 7, z-loss)")


# ── task next_embed: 15 points ────────────────────────────────────────────────────────
def next_embed_loss(pred: Tensor, target: Tensor, valid: Tensor, kind: str = "mse") -> Tensor:
    """Mean over valid positions x D dims of (pred-target)^2 ('mse') or |pred-target| ('l1').
    (B,T,D), (B,T,D), (B,T) bool -> () float

    The target (the next token's embedding row) is detached for both kinds: the gradient
    w.r.t. `target` is exactly 0, so the head learns to move toward it and nothing pulls the
    embedding table toward the prediction. The gradient reaches `pred`."""
    raise NotImplementedError("next_embed: mean squared / absolute error to the detached target (both kinds) over valid positions and dims (lesson 8, next-embed)")


# ── task total: 5 points ──────────────────────────────────────────────────────────────
def total_loss(ce: Tensor, zloss: Tensor, next_embed: Tensor, zloss_weight: float,
               next_embed_weight: float) -> Tensor:
    """ce + zloss_weight * zloss + next_embed_weight * next_embed. () float Tensors, floats -> ()

    A component whose weight is exactly 0 is left out, so an unused one (maybe nan or inf)
    can't leak into the total (0 * nan is nan). Any other weight, tiny or negative, multiplies
    its component; a nan in a used component shows in the total. The gradient reaches ce,
    zloss and next_embed (d total/d zloss = zloss_weight)."""
    raise NotImplementedError("total: ce plus each other component times its own weight; a weight of exactly 0 leaves it out (lesson 9, the training loop)")
