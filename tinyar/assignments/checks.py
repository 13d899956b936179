"""The graded checks: each task's functions against an independent numpy oracle.

A check gets the student's functions by name, calls them on random inputs of random shapes
(fixed by the seed, so grading is repeatable) and raises `Failed` with one line saying what
is wrong. It passes numpy arrays as `Arg`s and gets `Out`s back (calls.py), so the same
check runs in pytest and in the grading process, which never holds the student's objects.
Random draws are tested as distributions (every set of positions equally likely, rows and
calls independent), not against one implementation's numbers. When a wrong value equals
what a classic mistake produces, the line names the mistake. The oracles (oracles.py) are
plain numpy and never call tinyar's solutions.
"""
from __future__ import annotations

import numpy as np

from tinyar.assignments.calls import Arg
from tinyar.assignments.checking import Failed, arr, close, grads, kind, parts, rows_without_0, scalar, shaped
from tinyar.assignments.checks_mask import check_mask_positions
from tinyar.assignments.oracles import (MASK, PAD, ce_grad_oracle, ce_oracle, ce_terms, next_embed_grad_oracle,
                                        next_embed_oracle, visible_oracle, zloss_oracle)


# ── one check per task: fns maps function names to callables that return Outs ───────────

def check_shift(fns, rng: np.random.Generator) -> None:
    shift = fns["shift"]
    B, T = int(rng.integers(2, 5)), int(rng.integers(4, 10))
    tokens = np.arange(B * (T + 1), dtype=np.int32).reshape(B, T + 1)  # arange: each target = input + 1
    inp, tgt = parts(shift(Arg(tokens)), 2, "shift")
    inp = shaped(arr(inp, "inp"), (B, T), f"inp for a window of shape {tokens.shape}")
    tgt = shaped(arr(tgt, "tgt"), (B, T), f"tgt for a window of shape {tokens.shape}")
    if (inp == tokens[:, 1:]).all() and (tgt == tokens[:, :-1]).all():
        raise Failed("inp and tgt are swapped: the inputs are the first T tokens, the targets the last T")
    if not (inp == tokens[:, :-1]).all():
        raise Failed(f"on arange data inp[0] = {inp[0].tolist()}, expected the first T tokens {tokens[0, :-1].tolist()}")
    if not (tgt == inp + 1).all():
        why = ": the targets equal the inputs (off by one)" if (tgt == inp).all() else ""
        raise Failed(f"on arange data every target must be its input + 1, got tgt[0] = {tgt[0].tolist()}{why}")
    for _ in range(2):                                       # random shapes, random ids
        B, T = int(rng.integers(1, 7)), int(rng.integers(1, 17))
        tokens = rng.integers(0, 258, (B, T + 1)).astype(np.int32)
        inp, tgt = (arr(t, "shift output") for t in parts(shift(Arg(tokens)), 2, "shift"))
        if inp.shape != (B, T) or tgt.shape != (B, T) or \
                not ((inp == tokens[:, :-1]).all() and (tgt == tokens[:, 1:]).all()):
            raise Failed(f"wrong inputs/targets for a {tokens.shape} window of random ids (hard-coded sizes?)")


def check_replace(fns, rng: np.random.Generator) -> None:
    replace_masked, apply_mask = fns["replace_masked"], fns["apply_mask"]
    for trial in range(2):
        B, T = int(rng.integers(1, 5)), int(rng.integers(3, 12))
        tokens = rng.integers(0, 256, (B, T + 1)).astype(np.int32)
        inp, tgt = np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])
        mask = rows_without_0(rng, B, T, 0.4)
        mask[:, 1] = True   # every row has a masked position
        want = np.where(mask, MASK, inp)

        got = shaped(arr(replace_masked(Arg(inp), Arg(mask)), "replace_masked"), (B, T), "replace_masked")
        if not np.issubdtype(got.dtype, np.integer):
            raise Failed(f"replace_masked must return integer token ids, got dtype {got.dtype}")
        if not (got[mask] == MASK).all():
            raise Failed(f"masked inputs must become MASK={MASK}, got {sorted(set(got[mask].tolist()))[:5]}")
        if not (got == want).all():
            raise Failed("replace_masked changed inputs at positions that are not masked")

        i2, t2, hidden = parts(apply_mask(Arg(inp), Arg(tgt), Arg(mask), "replace"), 3, "apply_mask")
        i2, t2 = arr(i2, "apply_mask's inp"), arr(t2, "apply_mask's tgt")
        if t2.shape == tgt.shape and (t2 == np.where(mask, MASK, tgt)).all():
            raise Failed("the targets were masked instead of the inputs: MASK goes into inp, tgt keeps the true next tokens")
        if t2.shape != tgt.shape or not (t2 == tgt).all():
            raise Failed("replace mode must return the targets unchanged (every next token is still predicted)")
        if i2.shape != inp.shape or not (i2 == want).all():
            raise Failed("replace mode must return inp with MASK at the masked positions and the tokens elsewhere")
        # no key is hidden: None, or (accepted as the same thing) an all-False (B,T) mask
        if kind(hidden) != "none" and not (kind(hidden) == "tensor" and hidden.value.shape == (B, T)
                                           and not hidden.value.astype(bool).any()):
            raise Failed("replace mode hides no attention keys: return None as hidden_keys")

        i3, t3, hidden = parts(apply_mask(Arg(inp), Arg(tgt), Arg(mask), "fcm"), 3, "apply_mask")
        if not ((arr(i3, "inp") == inp).all() and (arr(t3, "tgt") == tgt).all()):
            raise Failed("fcm mode must leave inp and tgt unchanged (the masked tokens are hidden as keys instead)")
        if kind(hidden) != "tensor" or hidden.value.shape != (B, T) or hidden.value.dtype != bool \
                or not (hidden.value == mask).all():
            raise Failed("fcm mode must return the mask itself (B,T) bool as hidden_keys")


def check_fcm(fns, rng: np.random.Generator) -> None:
    mask_scores = fns["mask_scores"]
    for trial in range(2):                                   # two random shapes
        B, H, T = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(3, 10))
        scores = rng.standard_normal((B, H, T, T)).astype(np.float32)
        hidden = rows_without_0(rng, B, T, 0.4)
        hidden[:, 2] = True
        for hk, case in [(None, "with hidden_keys=None"), (hidden, "with hidden keys")]:
            got = arr(mask_scores(Arg(scores), None if hk is None else Arg(hk)), "mask_scores")
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
                raise Failed(f"{case}: query {i} " + ("must not" if vis[b, h, i, j] else "must")
                             + f" see key {j} (batch {b})" + (f": {why}" if why else ""))
            if not np.allclose(got[vis], scores[vis]):
                raise Failed(f"{case}: the visible scores must stay unchanged")


def check_cross_entropy(fns, rng: np.random.Generator) -> None:
    ce = fns["cross_entropy"]
    for trial in range(2):                                   # two random shapes
        B, T, V = int(rng.integers(1, 5)), int(rng.integers(2, 8)), 258   # 256 bytes + MASK + PAD
        logits = (rng.standard_normal((B, T, V)) * 2).astype(np.float32)
        tgt = rng.integers(0, 256, (B, T)).astype(np.int32)
        tgt[rng.random((B, T)) < 0.25], tgt[0, -1], tgt[:, 0] = PAD, PAD, 1   # some PAD, never a whole row
        valid = tgt != PAD
        terms = ce_terms(logits, tgt)
        mistakes = {"PAD targets were counted in the mean (average over valid positions only)": terms.mean(),
                    "the sum was divided by all B*T positions (divide by the number of valid ones)":
                        terms[valid].sum() / (B * T),
                    "that is the sum, not the mean": terms[valid].sum()}
        out = ce(Arg(logits, grad=trial == 0), Arg(tgt), Arg(valid))
        close(scalar(out, "cross_entropy"), ce_oracle(logits, tgt, valid), f"cross_entropy for {(B, T, V)} logits",
              mistakes)
        if trial:                                            # the gradient on the first shape only (compile time)
            continue
        (g,) = grads(out, 1, "cross_entropy")
        if not np.abs(g).any():
            raise Failed("no gradient reaches the logits: compute with tinygrad ops (no .numpy() round trip)")
        if not np.allclose(g, ce_grad_oracle(logits, tgt, valid), atol=1e-6):
            raise Failed("the gradient w.r.t. the logits is wrong (expected (softmax - onehot) / n_valid at valid positions)")
    big = logits * 1000
    got = scalar(ce(Arg(big), Arg(tgt), Arg(valid)), "cross_entropy")
    if not np.isfinite(got):
        raise Failed(f"cross_entropy is {got} at 1000x logits: subtract each row's max before exp (log-sum-exp)")
    close(got, ce_oracle(big, tgt, valid), "cross_entropy at 1000x logits")


def check_zloss(fns, rng: np.random.Generator) -> None:
    zloss = fns["attention_zloss"]
    depth, B, H, T = int(rng.integers(2, 5)), int(rng.integers(1, 4)), int(rng.integers(2, 5)), int(rng.integers(2, 7))
    for depth, B, H, T in [(depth, B, H, T), (depth + 1, B + 1, H, T + 1), (1, B, H + 1, T)]:  # nothing hard-coded
        lses = [(rng.standard_normal((B, H, T)) + 1.5).astype(np.float32) for _ in range(depth)]
        s = np.sum(lses, axis=0, dtype=np.float64)
        mistakes = {"each layer was squared before summing over layers (sum the layers first, then square)":
                    sum((l.astype(np.float64) ** 2).sum(1).mean() for l in lses),
                    "the heads were averaged (sum them)": (s ** 2).mean(1).mean(),
                    "only the last layer counted (sum over every layer)": (lses[-1].astype(np.float64) ** 2).sum(1).mean(),
                    "that is a sum over batch and positions (take their mean)": (s ** 2).sum()}
        if depth == 1:
            mistakes = {}
        got = scalar(zloss([Arg(l) for l in lses]), "attention_zloss")
        close(got, zloss_oracle(lses), f"attention_zloss of {depth} layers of {(B, H, T)}", mistakes)


def check_next_embed(fns, rng: np.random.Generator) -> None:
    loss = fns["next_embed_loss"]
    for trial in range(2):                                   # two random shapes, both kinds
        B, T, D = int(rng.integers(1, 4)), int(rng.integers(2, 8)), int(rng.integers(1, 9))
        pred, target = (rng.standard_normal((B, T, D)).astype(np.float32) for _ in range(2))
        valid = rng.random((B, T)) > 0.3
        valid[0, 0], valid[0, -1] = True, False
        for kind_ in ("mse", "l1"):
            other = "l1" if kind_ == "mse" else "mse"
            mistakes = {"positions with PAD targets were counted (average over valid positions only)":
                        next_embed_oracle(pred, target, np.ones_like(valid), kind_),
                        f"that is the {other} loss": next_embed_oracle(pred, target, valid, other)}
            if D > 1:
                mistakes["that is summed over D (average over the D dims too)"] = \
                    next_embed_oracle(pred, target, valid, kind_) * D
            out = loss(Arg(pred, grad=trial == 0), Arg(target, grad=trial == 0), Arg(valid), kind_)
            what = f"next_embed_loss({kind_!r}) for {(B, T, D)}"
            close(scalar(out, what), next_embed_oracle(pred, target, valid, kind_), what, mistakes)
            if trial:                                        # gradients on the first shape only (compile time)
                continue
            gp, gt = grads(out, 2, what)
            if np.abs(gt).any():
                raise Failed(f"{what}: gradient flows into the target: detach it (for both kinds), so the loss "
                             f"can't pull the embeddings toward the prediction")
            if not np.allclose(gp, next_embed_grad_oracle(pred, target, valid, kind_), atol=1e-6):
                raise Failed(f"{what}: the gradient w.r.t. pred is wrong"
                             + (" (none reaches it)" if not np.abs(gp).any() else ""))


def check_total(fns, rng: np.random.Generator) -> None:
    total_loss = fns["total_loss"]
    ce, z, ne = (float(v) for v in rng.uniform(0.5, 8, 3).astype(np.float32))
    w = float(rng.uniform(0.05, 0.9))
    # a grid of weights: 0 (left out, even when its component is nan or inf), tiny, negative, ordinary
    grid = [(w, 0.3 + w, z, ne), (0.0, w, np.nan, ne), (-w, 1e-6, z, 2e5), (1e-30, 0.0, 3e29, np.inf)]
    for zw, nw, zv, nv in grid:
        zw, nw = float(np.float32(zw)), float(np.float32(nw))
        want = ce + (zw * np.float64(zv) if zw != 0 else 0) + (nw * np.float64(nv) if nw != 0 else 0)
        mistakes = {}
        if (zw == 0 and not np.isfinite(zv)) or (nw == 0 and not np.isfinite(nv)):
            mistakes["a component whose weight is 0 leaked into the total (0 * inf and 0 * nan are nan): leave it "
                     "out, don't multiply it by 0"] = np.nan
        mistakes["the weights are swapped (zloss_weight goes with zloss)"] = ce + nw * zv + zw * nv
        for name, wt, v, keep in [("zloss", zw, zv, nw * nv), ("next-embed loss", nw, nv, zw * zv)]:
            if wt != 0:
                why = ("negative" if wt < 0 else "tiny" if abs(wt) < 1e-3 else "")
                mistakes[f"the {name} with its {why + ' ' if why else ''}weight {wt:g} was left out (only a weight "
                         f"of exactly 0 leaves a component out)"] = ce + (keep if keep == keep else 0)
        out = total_loss(*(Arg(np.float32(v), grad=True) for v in (ce, zv, nv)), zw, nw)
        what = f"total with zloss_weight={zw:g} (zloss={zv:g}), next_embed_weight={nw:g} (next_embed={nv:g})"
        close(scalar(out, "total_loss"), want, what, mistakes)
        if np.isfinite(want):
            g = grads(out, 3, "total_loss")
            if not np.allclose([float(x) for x in g], [1.0, zw if zw != 0 else 0, nw if nw != 0 else 0],
                               rtol=1e-5, atol=1e-30):
                raise Failed(f"{what}: the gradient w.r.t. (ce, zloss, next_embed) is {[float(x) for x in g]}, "
                             f"expected (1, zloss_weight, next_embed_weight) with 0 for a left-out component")


CHECKS = {"shift": check_shift, "mask_positions": check_mask_positions, "replace": check_replace,
          "fcm": check_fcm, "cross_entropy": check_cross_entropy, "zloss": check_zloss,
          "next_embed": check_next_embed, "total": check_total}


def run_check(task_id: str, fns: dict, seed: int = 0) -> None:
    """Run one task's check; `seed` picks the random shapes and values (0: the default set)."""
    from tinyar.assignments.checks_decoder import CHECKS as DECODER     # (they import the helpers above)
    from tinyar.assignments.checks_training import CHECKS as TRAINING
    checks = {**CHECKS, **TRAINING, **DECODER}   # (in this order: the seeds of the older tasks stay)
    checks[task_id](fns, np.random.default_rng([seed, list(checks).index(task_id)]))
