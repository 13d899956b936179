"""The graded checks: each task's functions against an independent numpy oracle.

A check gets the student's functions by name, calls them on small random inputs (fixed
seeds, so grading is repeatable) and raises `Failed` with one line saying what is wrong.
When a wrong value equals what a classic mistake produces, the line names the mistake.
The oracles (tinyar/assignments/oracles.py) are plain numpy and never call tinyar's solutions.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor, dtypes

from tinyar.assignments.oracles import (MASK, PAD, ce_grad_oracle, ce_oracle, ce_terms, next_embed_oracle,
                                   visible_oracle, zloss_oracle)


class Failed(AssertionError):
    """The submission gave a wrong answer; the message says what and, if known, why."""


# ── helpers ──────────────────────────────────────────────────────────────────────────────

def arr(x, what: str) -> np.ndarray:
    if not isinstance(x, Tensor):
        raise Failed(f"{what} must be a tinygrad Tensor, got {type(x).__name__}")
    return x.numpy()


def scalar(x, what: str) -> float:
    a = arr(x, what)
    if a.shape != ():
        raise Failed(f"{what} must be a scalar Tensor of shape (), got shape {a.shape}")
    return float(a)


def shaped(a: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    if a.shape != shape:
        raise Failed(f"{what} has shape {a.shape}, expected {shape}")
    return a


def parts(out, n: int, what: str) -> tuple:
    if not isinstance(out, (tuple, list)) or len(out) != n:
        raise Failed(f"{what} must return a tuple of {n}, got {type(out).__name__}")
    return tuple(out)


def close(got: float, want: float, what: str, mistakes: dict[str, float] | None = None, rtol=1e-4) -> None:
    """got ≈ want, else Failed naming the classic mistake whose value got matches, if any."""
    if not np.isfinite(got):
        raise Failed(f"{what} is {got}, expected {want:.6g}")
    if abs(got - want) <= rtol * abs(want) + 1e-6:
        return
    why = next((m for m, v in (mistakes or {}).items() if abs(got - v) <= rtol * abs(v) + 1e-6), None)
    raise Failed(f"{what} = {got:.6g}, expected {want:.6g}" + (f": {why}" if why else ""))


def gradient(out: Tensor, *wrt: Tensor) -> list[np.ndarray]:
    try:
        return [g.numpy() for g in out.gradient(*wrt)]
    except RuntimeError as e:
        raise Failed(f"no gradient through the result ({e}); compute it with tinygrad ops") from None


def rows_without_0(rng: np.random.Generator, B: int, T: int, frac: float) -> np.ndarray:
    """A random (B,T) bool mask that never marks position 0."""
    m = rng.random((B, T)) < frac
    m[:, 0] = False
    return m


# ── one check per task: fns maps function names to the submission's functions ───────────

def check_shift(fns, rng: np.random.Generator) -> None:
    shift = fns["shift"]
    B, T = int(rng.integers(2, 5)), int(rng.integers(4, 10))
    tokens = np.arange(B * (T + 1), dtype=np.int32).reshape(B, T + 1)  # arange: each target = input + 1
    inp, tgt = parts(shift(Tensor(tokens)), 2, "shift")
    inp = shaped(arr(inp, "inp"), (B, T), f"inp for a window of shape {tokens.shape}")
    tgt = shaped(arr(tgt, "tgt"), (B, T), f"tgt for a window of shape {tokens.shape}")
    if (inp == tokens[:, 1:]).all() and (tgt == tokens[:, :-1]).all():
        raise Failed("inp and tgt are swapped: the inputs are the first T tokens, the targets the last T")
    if not (inp == tokens[:, :-1]).all():
        raise Failed(f"on arange data inp[0] = {inp[0].tolist()}, expected the first T tokens {tokens[0, :-1].tolist()}")
    if not (tgt == inp + 1).all():
        why = ": the targets equal the inputs (off by one)" if (tgt == inp).all() else ""
        raise Failed(f"on arange data every target must be its input + 1, got tgt[0] = {tgt[0].tolist()}{why}")
    tokens = rng.integers(0, 258, (B + 1, T + 3)).astype(np.int32)   # another shape, random ids
    inp, tgt = (arr(t, "shift output") for t in parts(shift(Tensor(tokens)), 2, "shift"))
    if inp.shape != (B + 1, T + 2) or tgt.shape != (B + 1, T + 2) or \
            not ((inp == tokens[:, :-1]).all() and (tgt == tokens[:, 1:]).all()):
        raise Failed(f"wrong inputs/targets for a {tokens.shape} window of random ids (hard-coded sizes?)")


def check_mask_positions(fns, rng: np.random.Generator) -> None:
    choose = fns["choose_mask_positions"]
    seed = int(rng.integers(1 << 30))

    def draw(seed: int, B: int, T: int, p: float) -> np.ndarray:
        m = choose(np.random.default_rng(seed), B, T, p)
        if isinstance(m, Tensor):
            raise Failed("choose_mask_positions must return a numpy array (it runs on the host), got a Tensor")
        m = shaped(np.asarray(m), (B, T), f"the mask for B={B}, T={T}")
        if m.dtype != bool:
            raise Failed(f"the mask must be a bool array, got dtype {m.dtype}")
        return m

    cases = [(4000, 9, 0.3), (3, 4, 0.99), (5, 6, 0.1), (int(rng.integers(2, 6)), int(rng.integers(2, 20)), rng.random())]
    for B, T, p in cases:
        k, m = min(int(T * p), T - 1), draw(seed, B, T, p)
        if m[:, 0].any():
            raise Failed(f"position 0 was masked in {int(m[:, 0].sum())} of {B} rows: choose from 1..T-1 only "
                         f"(position 0 stays visible)")
        if (bad := np.flatnonzero(m.sum(1) != k)).size:
            raise Failed(f"row {bad[0]} has {int(m[bad[0]].sum())} masked positions, expected exactly "
                         f"min(floor(T*p), T-1) = {k} for T={T}, p={p:.3g} (distinct positions)")
    rate, want = draw(seed, 4000, 9, 0.3)[:, 1:].mean(0), 2 / 8   # k=2 of the 8 positions 1..8
    j = int(np.abs(rate - want).argmax())
    if abs(rate[j] - want) > 0.04:                                  # > 5 standard deviations
        raise Failed(f"positions are not uniform over 1..T-1: position {j + 1} was masked in {rate[j]:.0%} "
                     f"of rows, expected {want:.0%}")
    if not (draw(seed, 50, 12, 0.25) == draw(seed, 50, 12, 0.25)).all():
        raise Failed("the same rng seed gave different masks: draw every random number from the rng argument")
    if (draw(seed, 50, 12, 0.25) == draw(seed + 1, 50, 12, 0.25)).all():
        raise Failed("different rng seeds gave the same mask: draw the positions with the rng argument")


def check_replace(fns, rng: np.random.Generator) -> None:
    replace_masked, apply_mask = fns["replace_masked"], fns["apply_mask"]
    B, T = int(rng.integers(2, 5)), int(rng.integers(4, 10))
    tokens = rng.integers(0, 256, (B, T + 1)).astype(np.int32)
    inp, tgt = np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])
    mask = rows_without_0(rng, B, T, 0.4)
    mask[:, 1] = True   # every row has a masked position
    want = np.where(mask, MASK, inp)

    got = shaped(arr(replace_masked(Tensor(inp), Tensor(mask)), "replace_masked"), (B, T), "replace_masked")
    if not np.issubdtype(got.dtype, np.integer):
        raise Failed(f"replace_masked must return integer token ids, got dtype {got.dtype}")
    if not (got[mask] == MASK).all():
        raise Failed(f"masked inputs must become MASK={MASK}, got {sorted(set(got[mask].tolist()))[:5]}")
    if not (got == want).all():
        raise Failed("replace_masked changed inputs at positions that are not masked")

    i2, t2, hidden = parts(apply_mask(Tensor(inp), Tensor(tgt), Tensor(mask), "replace"), 3, "apply_mask")
    i2, t2 = arr(i2, "apply_mask's inp"), arr(t2, "apply_mask's tgt")
    if t2.shape == tgt.shape and (t2 == np.where(mask, MASK, tgt)).all():
        raise Failed("the targets were masked instead of the inputs: MASK goes into inp, tgt keeps the true next tokens")
    if t2.shape != tgt.shape or not (t2 == tgt).all():
        raise Failed("replace mode must return the targets unchanged (every next token is still predicted)")
    if i2.shape != inp.shape or not (i2 == want).all():
        raise Failed("replace mode must return inp with MASK at the masked positions and the tokens elsewhere")
    if hidden is not None:
        raise Failed("replace mode hides no attention keys: return None as hidden_keys")

    i3, t3, hidden = parts(apply_mask(Tensor(inp), Tensor(tgt), Tensor(mask), "fcm"), 3, "apply_mask")
    if not ((arr(i3, "inp") == inp).all() and (arr(t3, "tgt") == tgt).all()):
        raise Failed("fcm mode must leave inp and tgt unchanged (the masked tokens are hidden as keys instead)")
    if not isinstance(hidden, Tensor) or hidden.shape != (B, T) or not (hidden.numpy().astype(bool) == mask).all():
        raise Failed("fcm mode must return the mask itself (B,T) bool as hidden_keys")


def check_fcm(fns, rng: np.random.Generator) -> None:
    mask_scores = fns["mask_scores"]
    B, H, T = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(4, 9))
    scores = rng.standard_normal((B, H, T, T)).astype(np.float32)
    hidden = rows_without_0(rng, B, T, 0.4)
    hidden[:, 2] = True
    for hk, case in [(None, "with hidden_keys=None"), (hidden, "with hidden keys")]:
        got = arr(mask_scores(Tensor(scores), None if hk is None else Tensor(hk)), "mask_scores")
        shaped(got, (B, H, T, T), f"mask_scores {case}")
        vis = got > -1e9                                       # -inf (or a huge negative) = hidden
        want = np.broadcast_to(visible_oracle(B, T, hk)[:, None], vis.shape)
        if (vis != want).any():
            causal = np.broadcast_to(visible_oracle(B, T, None)[:, None], vis.shape)
            unhidden = np.ones_like(vis) if hk is None else np.broadcast_to(~hk[:, None, None, :], vis.shape)
            known = {"future keys are visible: keep the causal mask (key j <= query i)": unhidden,
                     "the causal mask is transposed: query i sees keys j <= i": want.swapaxes(-1, -2)}
            if hk is not None:
                known["the hidden keys are still visible: hide key j in every row where hidden_keys[b, j]"] = causal
                known["hidden positions were hidden as queries (rows), not keys (columns)"] = \
                    causal & ~hk[:, None, :, None]
            why = next((m for m, v in known.items() if (vis == v).all()), None)
            b, h, i, j = np.argwhere(vis != want)[0]
            raise Failed(f"{case}: query {i} " + ("must not" if vis[b, h, i, j] else "must") + f" see key {j} (batch {b})"
                         + (f": {why}" if why else ""))
        if not np.allclose(got[vis], scores[vis]):
            raise Failed(f"{case}: the visible scores must stay unchanged")


def check_cross_entropy(fns, rng: np.random.Generator) -> None:
    ce = fns["cross_entropy"]
    B, T, V = int(rng.integers(2, 5)), int(rng.integers(3, 8)), 258
    logits = (rng.standard_normal((B, T, V)) * 2).astype(np.float32)
    tgt = rng.integers(0, 256, (B, T)).astype(np.int32)
    tgt[rng.random((B, T)) < 0.25], tgt[0, -1], tgt[:, 0] = PAD, PAD, 7   # some PAD, never a whole row
    valid = tgt != PAD
    terms = ce_terms(logits, tgt)
    mistakes = {"PAD targets were counted in the mean (average over valid positions only)": terms.mean(),
                "the sum was divided by all B*T positions (divide by the number of valid ones)": terms[valid].sum() / (B * T),
                "that is the sum, not the mean": terms[valid].sum()}
    x = Tensor(logits)
    out = ce(x, Tensor(tgt), Tensor(valid))
    close(scalar(out, "cross_entropy"), ce_oracle(logits, tgt, valid), "cross_entropy", mistakes)
    (g,) = gradient(out, x)
    if not np.abs(g).any():
        raise Failed("no gradient reaches the logits: compute with tinygrad ops (no .numpy() round trip)")
    if not np.allclose(g, ce_grad_oracle(logits, tgt, valid), atol=1e-6):
        raise Failed("the gradient w.r.t. the logits is wrong (expected (softmax - onehot) / n_valid at valid positions)")
    big = logits * 1000
    got = scalar(ce(Tensor(big), Tensor(tgt), Tensor(valid)), "cross_entropy")
    if not np.isfinite(got):
        raise Failed(f"cross_entropy is {got} at 1000x logits: subtract each row's max before exp (log-sum-exp)")
    close(got, ce_oracle(big, tgt, valid), "cross_entropy at 1000x logits")


def check_zloss(fns, rng: np.random.Generator) -> None:
    zloss = fns["attention_zloss"]
    depth, B, H, T = int(rng.integers(2, 5)), int(rng.integers(1, 4)), int(rng.integers(2, 5)), int(rng.integers(2, 7))
    for depth, B, H, T in [(depth, B, H, T), (depth + 1, B + 1, H, T + 1)]:   # two sizes: nothing hard-coded
        lses = [(rng.standard_normal((B, H, T)) + 1.5).astype(np.float32) for _ in range(depth)]
        s = np.sum(lses, axis=0, dtype=np.float64)
        mistakes = {"each layer was squared before summing over layers (sum the layers first, then square)":
                    sum((l.astype(np.float64) ** 2).sum(1).mean() for l in lses),
                    "the heads were averaged (sum them)": (s ** 2).mean(1).mean(),
                    "only the last layer counted (sum over every layer)": (lses[-1].astype(np.float64) ** 2).sum(1).mean(),
                    "that is a sum over batch and positions (take their mean)": (s ** 2).sum()}
        got = scalar(zloss([Tensor(l) for l in lses]), "attention_zloss")
        close(got, zloss_oracle(lses), f"attention_zloss of {depth} layers of {(B, H, T)}", mistakes)


def check_next_embed(fns, rng: np.random.Generator) -> None:
    loss = fns["next_embed_loss"]
    B, T, D = int(rng.integers(1, 4)), int(rng.integers(3, 8)), int(rng.integers(2, 9))
    pred, target = (rng.standard_normal((B, T, D)).astype(np.float32) for _ in range(2))
    valid = rng.random((B, T)) > 0.3
    valid[0, 0], valid[0, -1] = True, False
    p, t = Tensor(pred), Tensor(target)
    for kind in ("mse", "l1"):
        other = "l1" if kind == "mse" else "mse"
        mistakes = {"positions with PAD targets were counted (average over valid positions only)":
                    next_embed_oracle(pred, target, np.ones_like(valid), kind),
                    "that is summed over D (average over the D dims too)": next_embed_oracle(pred, target, valid, kind) * D,
                    f"that is the {other} loss": next_embed_oracle(pred, target, valid, other)}
        out = loss(p, t, Tensor(valid), kind)
        close(scalar(out, f"next_embed_loss({kind!r})"), next_embed_oracle(pred, target, valid, kind),
              f"next_embed_loss({kind!r})", mistakes)
        if kind == "mse":
            gp, gt = gradient(out, p, t)
    if np.abs(gt).any():
        raise Failed("gradient flows into the target: detach it, so the loss can't pull the embeddings toward the prediction")
    want = 2 * (pred - target) * valid[..., None] / (valid.sum() * D)
    if not np.allclose(gp, want, atol=1e-6):
        raise Failed("the gradient w.r.t. pred is wrong" + (" (none reaches it)" if not np.abs(gp).any() else ""))


def check_total(fns, rng: np.random.Generator) -> None:
    total_loss = fns["total_loss"]
    ce, z, ne = (float(v) for v in rng.uniform(0.5, 8, 3).astype(np.float32))
    w1, w2 = (float(w) for w in rng.uniform(0.05, 0.9, 2))
    for zw, nw in [(w1, w2), (0.0, w2), (w1, 0.0)]:
        mistakes = {"the weights are swapped (zloss_weight goes with zloss)": ce + nw * z + zw * ne,
                    "the components were added without their weights": ce + (zw > 0) * z + (nw > 0) * ne,
                    "the z-loss is missing": ce + nw * ne, "the next-embed loss is missing": ce + zw * z}
        got = total_loss(*(Tensor(v, dtype=dtypes.float32) for v in (ce, z, ne)), zw, nw)
        close(scalar(got, "total_loss"), ce + zw * z + nw * ne,
              f"total with zloss_weight={zw:.3g}, next_embed_weight={nw:.3g}", mistakes)


CHECKS = {"shift": check_shift, "mask_positions": check_mask_positions, "replace": check_replace,
          "fcm": check_fcm, "cross_entropy": check_cross_entropy, "zloss": check_zloss,
          "next_embed": check_next_embed, "total": check_total}


def run_check(task_id: str, fns: dict, seed: int = 0) -> None:
    """Run one task's check; `seed` picks the random shapes and values (0: the default set)."""
    CHECKS[task_id](fns, np.random.default_rng([seed, list(CHECKS).index(task_id)]))
