"""Assignment 2's checks: causal attention with its log-sum-exp, the pre-norm block, one
KV-cache step.

Same rules as checks.py: random shapes and values fixed by the seed (few shapes: each new one
costs the student's process tinygrad kernels), numpy oracles in float64 written out here,
independent of tinyar's solutions, and one line naming the mistake when a wrong answer
equals what a classic one gives.
"""
from __future__ import annotations

import math

import numpy as np

from tinyar.assignments.calls import Arg, SumGrad
from tinyar.assignments.checking import Failed, arr, kind, parts

RTOL, ATOL = 1e-4, 1e-5


# ── oracles ──────────────────────────────────────────────────────────────────────────────

def attention_oracle(q, k, v, scale: float | None = None, first: int = 0, seen: str = "causal"):
    """q (B,H,S,Dh) at positions first..first+S-1; k, v (B,H,T,Dh) -> out (B,H,S,Dh), lse (B,H,S).
    Query at position p sees the keys j <= p (seen='causal'), every key ('all'), or, for a
    classic mistake, attends causally but takes its lse over every key ('lse_all')."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    B, H, S, Dh = q.shape
    scale = 1 / math.sqrt(Dh) if scale is None else scale
    out, lse = np.zeros((B, H, S, Dh)), np.zeros((B, H, S))
    for b in range(B):
        for h in range(H):
            for i in range(S):
                s = [float(q[b, h, i] @ k[b, h, j]) * scale for j in range(k.shape[2])]
                keys = range(len(s)) if seen == "all" else range(first + i + 1)
                top = max(s[j] for j in keys)
                w = {j: math.exp(s[j] - top) for j in keys}
                total = sum(w.values())
                out[b, h, i] = sum(w[j] / total * v[b, h, j] for j in keys)
                lse[b, h, i] = top + math.log(total if seen != "lse_all" else sum(math.exp(x - top) for x in s))
    return out, lse


def layer_norm(x, w):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * w


def gelu(x, tanh: bool = False):
    if tanh:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def block_oracle(x, heads: int, w: dict, variant: str = ""):
    """The pre-norm block in float64 -> y (B,T,D), lse (B,H,T); variant names a classic mistake."""
    x = x.astype(np.float64)
    w = {n: a.astype(np.float64) for n, a in w.items()}
    B, T, D = x.shape
    an, fn = (w["ff_norm"], w["attn_norm"]) if variant == "norms swapped" else (w["attn_norm"], w["ff_norm"])

    def attention(h):
        if variant == "heads interleaved":   # feature f of the H*Dh axis in head f % H
            split = lambda y: y.reshape(B, T, -1, heads).transpose(0, 3, 1, 2)
        else:
            split = lambda y: y.reshape(B, T, heads, -1).transpose(0, 2, 1, 3)
        a, lse = attention_oracle(split(h @ w["wq"].T), split(h @ w["wk"].T), split(h @ w["wv"].T))
        joined = a.transpose(0, 3, 1, 2) if variant == "heads interleaved" else a.transpose(0, 2, 1, 3)
        return joined.reshape(B, T, -1) @ w["wo"].T, lse

    def ff(h):
        return gelu(h @ w["w1"].T + w["b1"], tanh=variant == "tanh gelu") @ w["w2"].T + w["b2"]

    if variant == "post-norm":               # the original Transformer: normalize after each residual add
        a, lse = attention(x)
        x = layer_norm(x + a, an)
        return layer_norm(x + ff(x), fn), lse
    h = layer_norm(x, an)
    a, lse = attention(h)
    x = (h if variant == "residual normalized" else x) + a
    h = layer_norm(x, fn)
    return (h if variant == "residual normalized" else x) + ff(h), lse


# ── helpers ──────────────────────────────────────────────────────────────────────────────

def floats(x, shape: tuple, what: str) -> np.ndarray:
    """A returned float Tensor of this shape, as float64."""
    a = arr(x, what)
    if a.shape != shape:
        raise Failed(f"{what} has shape {a.shape}, expected {shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise Failed(f"{what} must be a float Tensor, got dtype {a.dtype}")
    return a.astype(np.float64)


def same(got: np.ndarray, want: np.ndarray, what: str, mistakes: dict | None = None) -> None:
    """got ≈ want everywhere, else Failed with the worst entry and the classic mistake it matches."""
    if np.allclose(got, want, rtol=RTOL, atol=ATOL):
        return
    why = next((m for m, v in (mistakes or {}).items() if np.allclose(got, v, rtol=RTOL, atol=ATOL)), None)
    err = np.where(np.isnan(got), np.inf, np.abs(got - want))
    at = np.unravel_index(int(np.argmax(err)), got.shape)
    raise Failed(f"{what} is wrong: at index {tuple(int(i) for i in at)} got {got[at]:.6g}, expected {want[at]:.6g}"
                 + (f": {why}" if why else ""))


def attention_mistakes(q, k, v, first: int = 0) -> dict[str, tuple]:
    """(out, lse) of the classic attention mistakes, by what the failure line says."""
    Dh = q.shape[-1]
    out = {"the scores were scaled by 1/Dh (scale by 1/sqrt(Dh))": attention_oracle(q, k, v, 1 / Dh, first),
           "the scores were not scaled (divide them by sqrt(Dh))": attention_oracle(q, k, v, 1.0, first),
           "the log-sum-exp was taken before the causal mask, over every key (take it over the keys j <= i)":
               attention_oracle(q, k, v, first=first, seen="lse_all"),
           "future keys are visible: query i may only see keys j <= i": attention_oracle(q, k, v, first=first, seen="all")}
    o, l = attention_oracle(q, k, v, first=first)
    top = np.max(np.where(np.arange(k.shape[2]) <= first + np.arange(q.shape[2])[:, None],
                          np.einsum("bhsd,bhtd->bhst", q.astype(np.float64), k) / math.sqrt(Dh), -np.inf), -1)
    out["the row max was subtracted but not added back to the log-sum-exp"] = (o, l - top)
    return out


# ── the checks ───────────────────────────────────────────────────────────────────────────

def check_attention(fns, rng: np.random.Generator) -> None:
    attention = fns["causal_attention"]
    for trial in range(2):                       # two random shapes (each costs kernels)
        B, H, T, Dh = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(3, 9)), int(rng.integers(4, 17))
        q, k, v = (rng.standard_normal((B, H, T, Dh)).astype(np.float32) * 2 for _ in range(3))
        for scale in ((1, 100) if trial == 0 else (1,)):   # 100x: exp overflows unless the row max is subtracted
            qs = q * np.float32(scale)
            with_grad = trial == 0 and scale == 1         # d sum(lse) / d q, k: the z-loss trains through lse
            result = attention(Arg(qs, grad=with_grad), Arg(k, grad=with_grad), Arg(v),
                               *([SumGrad(1)] if with_grad else []))
            out, lse = parts(result, 2, "causal_attention")
            lse_out = lse
            what = f"causal_attention for q, k, v of shape {(B, H, T, Dh)}" + (f" with q {scale}x larger" if scale > 1 else "")
            out = floats(out, (B, H, T, Dh), f"{what}: out")
            lse = floats(lse, (B, H, T), f"{what}: lse")
            if scale > 1 and not (np.isfinite(out).all() and np.isfinite(lse).all()):
                raise Failed(f"{what}: the result is not finite: subtract each row's max score before exp")
            want_out, want_lse = attention_oracle(qs, k, v)
            mistakes = attention_mistakes(qs, k, v)
            same(lse, want_lse, f"{what}: lse", {m: l for m, (_, l) in mistakes.items()})
            same(out, want_out, f"{what}: out", {m: o for m, (o, _) in mistakes.items()})
            if with_grad:
                lse_grad_check(lse_out, qs, k, what)


def lse_grad_check(lse, q, k, what: str) -> None:
    """The gradient of sum(lse) w.r.t. q and k: the softmax weights times the other side, scaled."""
    gq_want, gk_want = lse_grad_oracle(q, k)
    if lse.grads is None or len(lse.grads) != 2 or not (np.abs(lse.grads[0]).any() or np.abs(lse.grads[1]).any()):
        raise Failed(f"{what}: no gradient flows through lse ({lse.grad_error or 'it is constant'}): compute it "
                     f"with tinygrad ops and don't detach it, the z-loss trains through it")
    for name, got, want in (("q", lse.grads[0], gq_want), ("k", lse.grads[1], gk_want)):
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-5):
            raise Failed(f"{what}: the gradient of sum(lse) w.r.t. {name} is wrong (it is the softmax weights "
                         f"times {'k' if name == 'q' else 'q'} / sqrt(Dh))")


def lse_grad_oracle(q, k):
    """d sum_i lse_i / d q and / d k, in float64: dq_i = sum_j p_ij k_j / sqrt(Dh), dk_j = sum_i p_ij q_i / sqrt(Dh)."""
    q, k = q.astype(np.float64), k.astype(np.float64)
    T, Dh = q.shape[2], q.shape[3]
    s = np.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(Dh)
    s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, k) / math.sqrt(Dh), np.einsum("bhij,bhid->bhjd", p, q) / math.sqrt(Dh)


def block_weights(rng: np.random.Generator, D: int, H: int, Dh: int, F: int) -> dict:
    """Random block weights, large enough that every part of the block moves the output."""
    n = lambda *s, std=1.0: (rng.standard_normal(s) * std).astype(np.float32)
    return {"attn_norm": 1 + n(D, std=0.3), "wq": n(H * Dh, D, std=0.6), "wk": n(H * Dh, D, std=0.6),
            "wv": n(H * Dh, D, std=0.6), "wo": n(D, H * Dh, std=0.5), "ff_norm": 1 + n(D, std=0.3),
            "w1": n(F, D, std=0.5), "b1": n(F, std=0.3), "w2": n(D, F, std=0.4), "b2": n(D, std=0.3)}


ORDER = ("attn_norm", "wq", "wk", "wv", "wo", "ff_norm", "w1", "b1", "w2", "b2")   # prenorm_block's arguments


def check_block(fns, rng: np.random.Generator) -> None:
    block = fns["prenorm_block"]
    for trial in range(2):                       # two random shapes; D != H*Dh the second time
        B, T, H, Dh = int(rng.integers(1, 3)), int(rng.integers(3, 7)), int(rng.integers(1, 4)), int(rng.integers(2, 5))
        D = H * Dh if trial == 0 else H * Dh + int(rng.integers(1, 4))
        F = 4 * D
        x = (rng.standard_normal((B, T, D)) * 1.5 + 0.5).astype(np.float32)
        w = block_weights(rng, D, H, Dh, F)
        what = f"prenorm_block for x {(B, T, D)} with {H} heads of {Dh}"
        y, lse = parts(block(Arg(x), H, *(Arg(w[n]) for n in ORDER)), 2, "prenorm_block")
        y, lse = floats(y, (B, T, D), f"{what}: y"), floats(lse, (B, H, T), f"{what}: lse")
        want_y, want_lse = block_oracle(x, H, w)
        variants = {"post-norm: normalize a copy of x going into each sublayer (pre-norm), never the residual "
                    "stream itself": "post-norm",
                    "the residual stream was normalized: add each sublayer's output to x, not to norm(x)":
                        "residual normalized",
                    "the norms are swapped: attn_norm goes before the attention, ff_norm before the MLP": "norms swapped",
                    "the tanh GELU: use the exact one, x * Phi(x) with erf": "tanh gelu"}
        if H > 1:
            variants["the heads were split the wrong way: head h is features h*Dh..(h+1)*Dh-1"] = "heads interleaved"
        wrong = {m: block_oracle(x, H, w, v) for m, v in variants.items()}
        try:
            same(lse, want_lse, f"{what}: lse", {m: l for m, (_, l) in wrong.items()})
            same(y, want_y, f"{what}: y", {m: o for m, (o, _) in wrong.items()})
        except Failed:
            attention_first(fns, rng)            # a wrong causal_attention is the likelier cause: say so
            raise


def attention_first(fns, rng: np.random.Generator) -> None:
    """Failed naming task attention when the submission's causal_attention is wrong."""
    q, k, v = (rng.standard_normal((1, 2, 4, 3)).astype(np.float32) for _ in range(3))
    try:
        out, lse = parts(fns["causal_attention"](Arg(q), Arg(k), Arg(v)), 2, "causal_attention")
        want_out, want_lse = attention_oracle(q, k, v)
        ok = (kind(out) == kind(lse) == "tensor" and out.value.shape == want_out.shape and
              lse.value.shape == want_lse.shape and np.allclose(out.value, want_out, RTOL, ATOL)
              and np.allclose(lse.value, want_lse, RTOL, ATOL))
    except Failed:
        ok = False
    if not ok:
        raise Failed("causal_attention is wrong, and prenorm_block uses it: fix task attention first")


def check_kv_cache(fns, rng: np.random.Generator) -> None:
    step = fns["kv_cache_step"]
    B, H, T, Dh = int(rng.integers(1, 3)), int(rng.integers(1, 3)), int(rng.integers(4, 8)), int(rng.integers(2, 7))
    q, k, v = (rng.standard_normal((B, H, T, Dh)).astype(np.float32) * 1.5 for _ in range(3))
    # what the buffers held before: stale keys and values from an earlier text, finite and far off
    stale_k, stale_v = (rng.standard_normal((B, H, T, Dh)).astype(np.float32) * 3 + 4 for _ in range(2))
    middle = int(rng.integers(1, T - 1))
    for pos in (0, middle, T - 1):               # the first token, one in the middle, the last slot
        ck, cv = stale_k.copy(), stale_v.copy()
        ck[:, :, :pos], cv[:, :, :pos] = k[:, :, :pos], v[:, :, :pos]     # written by the earlier steps
        at = lambda a: np.ascontiguousarray(a[:, :, pos:pos + 1])
        out = parts(step(Arg(at(q)), Arg(at(k)), Arg(at(v)), Arg(ck), Arg(cv), pos), 4, "kv_cache_step")
        what = f"kv_cache_step at pos={pos} with a cache of {T} slots, shape {(B, H, T, Dh)}"
        got_out, got_lse = floats(out[0], (B, H, 1, Dh), f"{what}: out"), floats(out[1], (B, H, 1), f"{what}: lse")
        got_k, got_v = floats(out[2], (B, H, T, Dh), f"{what}: cache_k'"), floats(out[3], (B, H, T, Dh), f"{what}: cache_v'")
        for name, got, before, new in (("cache_k'", got_k, ck, k), ("cache_v'", got_v, cv, v)):
            if not np.allclose(got[:, :, pos], new[:, :, pos], RTOL, ATOL):
                why = " (it was not written)" if np.allclose(got[:, :, pos], before[:, :, pos], RTOL, ATOL) else ""
                raise Failed(f"{what}: slot {pos} of {name} must hold the new token's {name[6]}{why}")
            others = np.arange(T) != pos
            if not np.allclose(got[:, :, others], before[:, :, others], RTOL, ATOL):
                j = int(np.flatnonzero(others & ~np.isclose(got, before, RTOL, ATOL).all((0, 1, 3)))[0])
                raise Failed(f"{what}: slot {j} of {name} changed: write slot pos only, keep every other slot")
        want_out, want_lse = attention_oracle(at(q), k, v, first=pos)     # the true text: positions 0..pos
        mistakes = {m: r for m, r in attention_mistakes(at(q), k, v, first=pos).items() if "future" not in m}
        mistakes["the stale slots after pos were attended to: the query sees slots 0..pos only"] = \
            attention_oracle(at(q), np.where(np.arange(T)[:, None] == pos, k, ck), np.where(np.arange(T)[:, None] == pos,
                                                                                              v, cv), first=pos, seen="all")
        if pos:
            mistakes["the new token's own key and value were left out: the query sees slot pos too"] = \
                attention_oracle(at(q), k[:, :, :pos], v[:, :, :pos], first=pos - 1)
        mistakes["slot pos was read before the new key and value were written into it (it held a stale one)"] = \
            attention_oracle(at(q), ck, cv, first=pos)
        same(got_lse, want_lse, f"{what}: lse", {m: l for m, (_, l) in mistakes.items()})
        same(got_out, want_out, f"{what}: out", {m: o for m, (o, _) in mistakes.items()})


CHECKS = {"attention": check_attention, "block": check_block, "kv_cache": check_kv_cache}
