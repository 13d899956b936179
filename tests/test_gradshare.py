"""The gradient-share instrument (tinyar/gradshare.py) against gradients computed on their own.

Norms, dot products, shares and cosines are recomputed in numpy from each weighted component's
gradient taken by a separate backward pass of that component alone; the three add up to the
total's gradient, which tests/test_loss.py checks against the numpy oracles.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from tinygrad import Tensor

from conftest import KIND, NEXT_EMBED_WEIGHT, TEXT, TINY, TINY_FLAGS, ZLOSS_WEIGHT
from tinyar.data import Corpus
from tinyar.gradshare import measure, share_stats
from tinyar.loss import autoregressive_loss
from tinyar.train import Trainer, train


def own_gradient(tiny, mode: str, component: str) -> np.ndarray:
    """weight * d component / d every weight, by a backward pass of that component alone,
    flattened into one vector (the parameters in state-dict order)."""
    out = autoregressive_loss(tiny.model, tiny.tokens, mask_positions=tiny.mask, mask_mode=mode,
                              next_embed_kind=KIND[mode])
    weight = {"ce": 1.0, "zloss": ZLOSS_WEIGHT, "next_embed": NEXT_EMBED_WEIGHT}[component]
    params = list(tiny.state.values())
    try:
        (out[component] * weight).backward()
        return np.concatenate([np.zeros(p.numel()) if p.grad is None else p.grad.numpy().ravel() for p in params])
    finally:
        for p in params:
            p.grad = None   # the shared model stays as the other tests expect it


@pytest.mark.parametrize("mode", ["replace", "fcm"])
def test_norms_shares_and_cosines_equal_each_components_own_gradient(tiny, mode):
    cfg = tiny.cfg.replace(mask_mode=mode, zloss_weight=ZLOSS_WEIGHT, next_embed_weight=NEXT_EMBED_WEIGHT,
                           next_embed_kind=KIND[mode])
    stats = measure(tiny.model, list(tiny.state.values()), cfg, Tensor(tiny.tokens), Tensor(tiny.mask))
    got = {k: v.item() for k, v in stats.items()}
    g = {c: own_gradient(tiny, mode, c) for c in ("ce", "zloss", "next_embed")}
    total = g["ce"] + g["zloss"] + g["next_embed"]
    # the pieces add up to the total's gradient, which test_loss.py checks against numpy oracles
    oracle_total = np.concatenate([tiny.run(mode)["grad"][n].ravel() for n in tiny.state])
    np.testing.assert_allclose(total, oracle_total, rtol=1e-4, atol=1e-6 * np.abs(oracle_total).max())
    assert got["gnorm_total"] == pytest.approx(np.linalg.norm(total), rel=1e-4)
    for c, gc in g.items():
        assert np.linalg.norm(gc) > 0, c   # each component really reaches the weights here
        assert got[f"gnorm_{c}"] == pytest.approx(np.linalg.norm(gc), rel=1e-4), c
        assert got[f"share_{c}"] == pytest.approx(gc @ total / (total @ total), rel=1e-4, abs=1e-6), c
    for c in ("zloss", "next_embed"):
        cos = g["ce"] @ g[c] / (np.linalg.norm(g["ce"]) * np.linalg.norm(g[c]))
        assert got[f"cos_{c}"] == pytest.approx(cos, rel=1e-3, abs=1e-5), c
    assert sum(got[f"share_{c}"] for c in g) == pytest.approx(1.0, abs=1e-5)


def test_lse_statistics_are_the_models_per_layer_lse(tiny):
    # the same forward the oracle run saw (fcm hides keys, which changes the lse)
    cfg = tiny.cfg.replace(mask_mode="fcm")
    got = {k: v.item() for k, v in measure(tiny.model, list(tiny.state.values()), cfg, Tensor(tiny.tokens),
                                             Tensor(tiny.mask)).items()}
    lses = tiny.run("fcm")["lses"]                                    # depth x (B,H,T)
    for l, lse in enumerate(lses):
        assert got[f"lse_mean_l{l}"] == pytest.approx(lse.mean(), rel=1e-5)
        assert got[f"lse_max_l{l}"] == pytest.approx(lse.max(), rel=1e-5)
    assert got["lse_max"] == pytest.approx(max(l.max() for l in lses), rel=1e-5)
    assert got["lse_mean"] == pytest.approx(np.mean([l.mean() for l in lses]), rel=1e-5)


def numpy_stats(vectors: dict[str, np.ndarray]) -> dict[str, float]:
    total = sum(vectors.values())
    out = {"gnorm_total": np.linalg.norm(total)}
    for c, v in vectors.items():
        out[f"gnorm_{c}"], out[f"share_{c}"] = np.linalg.norm(v), v @ total / (total @ total)
        if c != "ce":
            out[f"cos_{c}"] = vectors["ce"] @ v / (np.linalg.norm(vectors["ce"]) * np.linalg.norm(v))
    return out


@pytest.mark.parametrize("k, cos, shares", [(2.0, 1.0, (1 / 3, 2 / 3)),      # the same direction
                                             (-0.5, -1.0, (2.0, -1.0)),       # against it: a negative share
                                             (None, 0.0, (0.2, 0.8))])       # orthogonal: |g_c|^2 / |g|^2
def test_shares_and_cosines_of_known_directions(k, cos, shares):
    rng = np.random.default_rng(1)
    a = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    flat = np.concatenate([x.ravel() for x in a])
    if k is None:   # a second direction orthogonal to the first, with |b|^2 = 4 |a|^2
        r = rng.normal(size=flat.size)
        r -= (r @ flat) / (flat @ flat) * flat
        other = r * 2 * np.linalg.norm(flat) / np.linalg.norm(r)
        b = [other[:12].reshape(3, 4).astype(np.float32), other[12:].astype(np.float32)]
    else:
        b = [k * x for x in a]
    stats = share_stats({"ce": [Tensor(x) for x in a], "zloss": [Tensor(x) for x in b]})
    got = {n: v.item() for n, v in stats.items()}
    want = numpy_stats({"ce": flat.astype(np.float64),
                        "zloss": np.concatenate([x.ravel() for x in b]).astype(np.float64)})
    assert got["cos_zloss"] == pytest.approx(cos, abs=1e-5)
    assert (got["share_ce"], got["share_zloss"]) == pytest.approx(shares, abs=1e-5)
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_a_component_with_itself_has_cosine_one_and_half_the_share():
    g = [Tensor(np.arange(1, 7, dtype=np.float32).reshape(2, 3))]
    got = {n: v.item() for n, v in share_stats({"ce": g, "next_embed": g}).items()}
    assert got["cos_next_embed"] == pytest.approx(1.0, abs=1e-6)
    assert got["share_ce"] == got["share_next_embed"] == pytest.approx(0.5, abs=1e-6)
    assert got["gnorm_total"] == pytest.approx(2 * np.sqrt(91), rel=1e-6)


def test_components_that_are_off_have_no_keys(tiny):
    # the model has a next-embed head but weight 0, and no z-loss: only ce is in the total
    params = list(tiny.state.values())
    got = {k: v.item() for k, v in measure(tiny.model, params, tiny.cfg, Tensor(tiny.tokens), None).items()}
    assert not [k for k in got if k.endswith(("zloss", "next_embed"))], sorted(got)
    assert got["share_ce"] == pytest.approx(1.0, abs=1e-6)
    assert got["gnorm_ce"] == pytest.approx(got["gnorm_total"], rel=1e-6)
    assert all(p.grad is None for p in params)   # gradients returned, no weight's .grad touched


def test_training_with_grad_share_logs_it_and_trains_the_same():
    # the instrument sees the very batch, mask and weights each logged step trains on (its total
    # gradient norm is that step's grad_norm), and it changes nothing in the run
    cfg = TINY.replace(log_every=5, mask_prob=0.25, zloss_weight=1e-4, steps=12, eval_every=100, save_every=100)
    plain = [r for r in train(Trainer(cfg), Corpus(TEXT, cfg.seq_len)) if r["kind"] == "train"]
    shared = [r for r in train(Trainer(cfg.replace(grad_share=True)), Corpus(TEXT, cfg.seq_len))
              if r["kind"] == "train"]
    assert [r["step"] for r in shared] == [1, 5, 10, 12]
    for a, b in zip(plain, shared):
        assert a["total"] == b["total"] and a["grad_norm"] == b["grad_norm"]   # bit for bit
        assert b["gnorm_total"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert b["share_ce"] + b["share_zloss"] == pytest.approx(1.0, abs=1e-5)
        assert -1.0 <= b["cos_zloss"] <= 1.0 and "share_next_embed" not in b
        assert "gnorm_ce" not in a and "lse_max" not in a
        assert b["lse_max"] >= b["lse_mean"]


def test_cli_train_grad_share_columns_and_metrics(tmp_path):
    # `train --grad-share`: its columns in the rows, its keys in metrics.jsonl, `plot --metric` draws them
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    from cli import cli
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", str(corpus), *TINY_FLAGS, "--steps", "4", "--log-every", "2",
                                   "--eval-every", "4", "--zloss", "1e-4", "--mlm", "0.25", "--grad-share",
                                   "--out", str(run), "--sample-tokens", "0", "--eval-sample-tokens", "0"])
    assert res.exit_code == 0, res.output
    assert "z share" in res.output and "cos z" in res.output and "ne share off" in res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 4]
    for r in train_rows:
        assert r["gnorm_total"] == pytest.approx(r["grad_norm"], rel=1e-4)
        assert r["share_ce"] + r["share_zloss"] == pytest.approx(1.0, abs=1e-5)
        assert {"lse_max_l0", "lse_max_l1", "lse_mean_l1", "cos_zloss"} <= set(r)
    drawn = CliRunner().invoke(cli, ["plot", str(run), "--metric", "lse_max"])
    assert drawn.exit_code == 0 and "max attention log-sum-exp" in drawn.output, drawn.output
