"""The mask-positions check: a random draw tested as a distribution, not against one
implementation's numbers. Every set of k positions equally likely (chi-square), rows and
successive calls independent (contingency tables), every random number from rng.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from tinyar.assignments.checking import Failed, kind, shaped


def chi2_z(stat: float, df: int) -> float:
    """How many standard deviations a chi-square statistic lies above its mean
    (Wilson-Hilferty: (X/df)^(1/3) is nearly normal). z > 5 happens by chance ~3e-7 of the time."""
    if df <= 0:
        return 0.0
    v = 2 / (9 * df)
    return ((stat / df) ** (1 / 3) - (1 - v)) / math.sqrt(v)


def uniformity_z(ids: np.ndarray, ncat: int) -> float:
    """Chi-square goodness of fit of category ids to the uniform distribution over ncat."""
    counts, want = np.bincount(ids, minlength=ncat), len(ids) / ncat
    return chi2_z(float(((counts - want) ** 2 / want).sum()), ncat - 1)


def independence_z(a: np.ndarray, b: np.ndarray, ncat: int) -> float:
    """Chi-square test of independence of two paired category ids (a contingency table)."""
    table = np.zeros((ncat, ncat))
    np.add.at(table, (a, b), 1)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    want = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return chi2_z(float(((table - want) ** 2 / want).sum()), (table.shape[0] - 1) * (table.shape[1] - 1))


def subset_ids(m: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's set of masked positions as one category id in 0..C(T-1,k)-1. -> ids (B,), C"""
    T, k = m.shape[1], int(m[0].sum())
    codes = [sum(1 << j for j in c) for c in combinations(range(1, T), k)]   # a set as the bits of its positions
    index = np.zeros(1 << T, dtype=np.int64)
    index[codes] = np.arange(len(codes))
    return index[m.astype(np.int64) @ (1 << np.arange(T))], len(codes)


def pattern_mistake(m: np.ndarray, rows_dependent: bool = False) -> str:
    """Name the pattern a non-uniform or dependent mask follows, if it is a known one."""
    pos = [np.flatnonzero(r) - 1 for r in m]                  # 0-based within 1..T-1
    n = m.shape[1] - 1
    gaps = [np.diff(np.r_[p, p[0] + n]) for p in pos]        # cyclic gaps between masked positions
    same = {"": ": every row has the same positions (draw each row afresh)"}
    shifted = (": every row is a shifted copy of the same positions (draw each row afresh)"
               if len({tuple(np.roll(g, -int(np.argmax(g)))) for g in gaps}) == 1 else "")
    span = (": every row is one contiguous span of positions; choose the positions independently of each other "
            "(e.g. the first k of a random permutation of 1..T-1)"
            if all(g.max() == n - len(g) + 1 for g in gaps) else "")
    if len({tuple(p) for p in pos}) == 1:
        return same[""]
    return (shifted or span) if rows_dependent else (span or shifted)


def check_mask_positions(fns, rng: np.random.Generator) -> None:
    choose = fns["choose_mask_positions"]
    seed = int(rng.integers(1 << 30))

    def draw(r: np.random.Generator, B: int, T: int, p: float) -> np.ndarray:
        m = choose(r, B, T, p)
        if kind(m) == "tensor":
            raise Failed("choose_mask_positions must return a numpy array (it runs on the host), got a Tensor")
        if kind(m) != "ndarray":
            raise Failed(f"choose_mask_positions must return a numpy array, got {kind(m)}")
        m = shaped(m.value, (B, T), f"the mask for B={B}, T={T}")
        if m.dtype != bool:
            raise Failed(f"the mask must be a bool array, got dtype {m.dtype}")
        k = min(int(T * p), T - 1)
        if m[:, 0].any():
            raise Failed(f"position 0 was masked in {int(m[:, 0].sum())} of {B} rows: choose from 1..T-1 only "
                         f"(position 0 stays visible)")
        if (bad := np.flatnonzero(m.sum(1) != k)).size:
            raise Failed(f"row {bad[0]} has {int(m[bad[0]].sum())} masked positions, expected exactly "
                         f"min(floor(T*p), T-1) = {k} for T={T}, p={p:.3g} (distinct positions)")
        return m

    gen = np.random.default_rng
    # the contract on every draw (count, range, type), over edge cases and random shapes
    cases = [(3, 2, 0.9), (3, 4, 0.99), (5, 6, 0.1), (2, 5, 1.0), (4, 7, 0.0)]
    cases += [(int(rng.integers(1, 7)), int(rng.integers(2, 41)), float(rng.random())) for _ in range(4)]
    for B, T, p in cases:
        draw(gen(seed), B, T, p)
    # every random number comes from rng, and each call moves it on
    if not (draw(gen(seed), 50, 12, 0.25) == draw(gen(seed), 50, 12, 0.25)).all():
        raise Failed("the same rng seed gave different masks: draw every random number from the rng argument")
    if (draw(gen(seed), 50, 12, 0.25) == draw(gen(seed + 1), 50, 12, 0.25)).all():
        raise Failed("different rng seeds gave the same mask: draw the positions with the rng argument")
    r = gen(seed)
    if (draw(r, 50, 12, 0.25) == draw(r, 50, 12, 0.25)).all():
        raise Failed("two calls with the same rng gave the same mask: draw from rng itself (not a copy or a new "
                     "generator seeded from it), so every call moves it on and each batch gets new positions")
    # each position 1..T-1 equally often
    m = draw(gen(seed), 4000, 9, 0.3)
    rate, want = m[:, 1:].mean(0), 2 / 8                      # k=2 of the 8 positions 1..8
    j = int(np.abs(rate - want).argmax())
    if abs(rate[j] - want) > 5 * math.sqrt(want * (1 - want) / 4000):
        raise Failed(f"positions are not uniform over 1..T-1: position {j + 1} was masked in {rate[j]:.0%} "
                     f"of rows, expected {want:.0%}")
    for B, T, p in [(6000, 6, 0.4), (6000, 7, 0.5)]:          # k=2 of 5 (10 sets), k=3 of 6 (20 sets)
        m = draw(gen(seed + T), B, T, p)
        ids, n = subset_ids(m)
        # rows independent of each other: row b+1's set tells nothing about row b's
        if independence_z(ids[0::2], ids[1::2], n) > 5:
            raise Failed(f"the rows are not independent (T={T}): row b+1's positions depend on row b's"
                         f"{pattern_mistake(m, rows_dependent=True) or ' (draw each row on its own)'}")
        # every set of k distinct positions equally likely within a row
        if uniformity_z(ids, n) > 5:
            counts = np.bincount(ids, minlength=n)
            raise Failed(f"the sets of positions are not uniform (T={T}, k={int(m[0].sum())}): some of the {n} "
                         f"possible sets were drawn {counts.max()} times, others {counts.min()}, expected about "
                         f"{B // n} each{pattern_mistake(m)}")
    # calls independent of each other: no pattern repeats from one batch to the next
    r = gen(seed + 1)
    calls = [subset_ids(draw(r, 8, 6, 0.4))[0] for _ in range(300)]     # (300, 8) set ids
    ids = np.array(calls)
    if independence_z(ids[0::2].ravel(), ids[1::2].ravel(), 10) > 5 or uniformity_z(ids.ravel(), 10) > 5:
        raise Failed("successive calls with one rng follow a pattern: each call's positions must be a fresh, "
                     "uniform draw from rng")
