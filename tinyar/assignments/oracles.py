"""What the assignment's answers must be, written independently of tinyar's solutions:
plain numpy in float64, with loops where a loop says it more plainly. The graded checks
(tinyar/assignments/checks.py) compare every submission against these.
"""
from __future__ import annotations

import numpy as np

MASK, PAD = 256, 257   # the token ids the assignment's docstrings promise (tinyar.data)


def ce_terms(logits: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[tgt] per position, via a max-shifted log-sum-exp. -> (B,T)"""
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(x - m).sum(-1))
    return lse - np.take_along_axis(x, tgt[..., None], -1)[..., 0]


def ce_oracle(logits, tgt, valid) -> float:
    return float(ce_terms(logits, tgt)[valid].mean())


def ce_grad_oracle(logits, tgt, valid) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p[np.arange(x.shape[0])[:, None], np.arange(x.shape[1])[None], tgt] -= 1
    return p * valid[..., None] / valid.sum()


def zloss_oracle(lses: list[np.ndarray]) -> float:
    B, H, T = lses[0].shape
    total = 0.0
    for b in range(B):
        for i in range(T):
            total += sum(sum(float(l[b, h, i]) for l in lses) ** 2 for h in range(H))
    return total / (B * T)


def next_embed_oracle(pred, target, valid, kind: str) -> float:
    err = pred.astype(np.float64) - target
    err = err ** 2 if kind == "mse" else np.abs(err)
    return float(err[valid].mean())


def next_embed_grad_oracle(pred, target, valid, kind: str) -> np.ndarray:
    """d loss / d pred: 2(pred-target) ('mse') or sign(pred-target) ('l1') at valid positions,
    over (number of valid positions x D)."""
    B, T, D = pred.shape
    n = int(valid.sum()) * D
    g = np.zeros((B, T, D))
    for b in range(B):
        for t in range(T):
            for d in range(D):
                if valid[b, t]:
                    e = float(pred[b, t, d]) - float(target[b, t, d])
                    g[b, t, d] = (2 * e if kind == "mse" else np.sign(e)) / n
    return g


def visible_oracle(B: int, T: int, hidden: np.ndarray | None) -> np.ndarray:
    """(B,T,T) bool: query i sees key j iff j <= i and key j is not hidden."""
    vis = np.zeros((B, T, T), dtype=bool)
    for b in range(B):
        for i in range(T):
            for j in range(i + 1):
                vis[b, i, j] = hidden is None or not hidden[b, j]
    return vis
