"""tinyar's loss is x-transformers' loss: every component, forward and gradient, on the same weights.

Fixture tests (always run) compare against tests/parity/fixture.npz, which
tests/parity/make_fixture.py wrote by running x-transformers in float64. Live tests (need the
`parity` extra) draw fresh weights of other shapes and run x-transformers in this process.

A difference is relative: |a-b|/|b| for a scalar, max|a-b| / max|b| for an array (an
elementwise rtol would be ruled by entries that happen to be near zero). tinyar runs in
float32, so ~1e-7 is what agreement looks like; a wrong formula shows as 1e-3 or more.
Every tinyar number comes out of one realize: tinygrad spends a minute or more generating
code for each new graph shape, so the tests share one graph per model shape.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

from tinyar.data import PAD
from tinyar.interop import from_x_transformers, parameter_names
from tinyar.loss import autoregressive_loss

RTOL = 1e-5        # losses, logits, predictions
GRAD_RTOL = 1e-4   # gradients of the total
FIXTURE = Path(__file__).parent / "parity" / "fixture.npz"

try:
    import torch  # noqa: F401
    import x_transformers  # noqa: F401
    sys.path.insert(0, str(FIXTURE.parent))
    import make_fixture as xt
    NO_XT = ""
except ImportError as e:
    NO_XT = f"live parity needs torch and x-transformers (pip install -e '.[parity]'): {e}"
live = pytest.mark.skipif(bool(NO_XT), reason=NO_XT)


def rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def tinyar_numbers(model, tokens, padded, fcm_positions, zloss_weight, next_embed_weight) -> dict[str, np.ndarray]:
    """tinyar's side of every quantity make_fixture.reference computes, x-transformers' names
    for the gradients. tokens/padded (B,T+1) int, fcm_positions (B,T) bool (True = hidden key)."""
    x, xp = Tensor(tokens.astype(np.int32)), Tensor(padded.astype(np.int32))
    if model.next_embed is None:
        next_embed_weight = 0.0   # as in make_fixture.reference: no head, no term
    plain = autoregressive_loss(model, x)
    pad = autoregressive_loss(model, xp)                             # next_embed: mse
    fcm = autoregressive_loss(model, x, mask_positions=fcm_positions, mask_mode="fcm")
    full = autoregressive_loss(model, xp, mask_positions=fcm_positions, mask_mode="fcm",
                               zloss_weight=zloss_weight, next_embed_weight=next_embed_weight)
    logits, _, _ = model(x[:, :-1])
    out = {"ce": plain["ce"], "zloss": plain["zloss"], "ce_pad": pad["ce"], "ce_fcm": fcm["ce"],
           "zloss_fcm": fcm["zloss"], "logits": logits, "total": full["total"]}
    if model.next_embed is not None:
        _, _, hidden = model(xp[:, :-1])
        out |= {"next_pred": model.next_embed(hidden), "next_mse": pad["next_embed"],
                "next_l1": autoregressive_loss(model, xp, next_embed_kind="l1")["next_embed"]}
    params = get_state_dict(model)
    out |= {f"grad/{k}": g for k, g in zip(params, full["total"].gradient(*params.values()))}
    Tensor.realize(*out.values())
    out = {k: v.numpy() for k, v in out.items()}
    # chain rule back to x-transformers' parameters: gamma = weight - 1 (same gradient),
    # its position table is ours * sqrt(dim), so its gradient is ours * dim**-0.5
    cfg = model.cfg
    for name, ours in parameter_names(cfg.depth, model.next_embed is not None).items():
        g = out.pop(f"grad/{ours}")
        out[f"grad/{name}"] = g * cfg.dim ** -0.5 if name == "pos_emb.emb.weight" else g
    return out


def next_embed_oracle(pred, weights, padded, kind, with_position) -> float:
    """Plain loops. Mean over valid targets x D of |pred - target| ('l1') or (pred - target)^2 ('mse').

    target = token row of the next token (tinyar), plus, with_position, the next position's row
    of the scaled position table (x-transformers' init_embeds[:, 1:])."""
    emb, pos = weights["token_emb.emb.weight"].astype(np.float64), weights["pos_emb.emb.weight"].astype(np.float64)
    total, count = 0.0, 0
    B, T = pred.shape[:2]
    for b in range(B):
        for i in range(T):
            nxt = padded[b, i + 1]
            if nxt == PAD:
                continue
            target = emb[nxt] + (pos[i + 1] * emb.shape[1] ** -0.5 if with_position else 0.0)
            err = pred[b, i].astype(np.float64) - target
            total += float(np.abs(err).sum() if kind == "l1" else (err * err).sum())
            count += err.size
    return total / count


# ---------------------------------------------------------------- fixture (no torch needed)

@pytest.fixture(scope="module")
def fx():
    f = np.load(FIXTURE)
    weights = {k[len("weight/"):]: f[k] for k in f.files if k.startswith("weight/")}
    ref = {k: f[k] for k in f.files if not k.startswith("weight/")}
    assert int(ref["pad"]) == PAD, "fixture written with another PAD id: rerun make_fixture.py"
    model = from_x_transformers(weights, heads=int(ref["heads"]))
    ours = tinyar_numbers(model, ref["tokens"], ref["padded"], ~ref["kv_mask"][:, :-1],
                          float(ref["zloss_weight"]), float(ref["next_embed_weight"]))
    return model, weights, ref, ours


def test_fixture_config_is_read_off_the_arrays(fx):
    cfg = fx[0].cfg
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.head_dim, cfg.vocab, cfg.seq_len, cfg.use_next_embed) == \
        (16, 2, 2, 8, 258, 9, True)


@pytest.mark.parametrize("key", ["ce", "ce_pad", "ce_fcm"])
def test_cross_entropy(fx, key):
    """ce: plain; ce_pad: targets == PAD ignored (wrapper ignore_index = pad_value = PAD);
    ce_fcm: the key mask the wrapper drew, passed as mask_positions with mask_mode='fcm'."""
    _, _, ref, ours = fx
    assert rel(ours[key], ref[key]) < RTOL, (key, float(ours[key]), float(ref[key]))


def test_fixture_pads_and_masks_matter(fx):
    """The PAD and fcm cases must test something: each moves x-transformers' ce well past RTOL."""
    ref = fx[2]
    assert rel(ref["ce_pad"], ref["ce"]) > 1e-3 and rel(ref["ce_fcm"], ref["ce"]) > 1e-3
    assert (ref["padded"][:, 1:] == PAD).any() and not ref["kv_mask"][:, :-1].all()


@pytest.mark.parametrize("key", ["zloss", "zloss_fcm"])
def test_attention_zloss(fx, key):
    """x-transformers' net on tokens[:, :-1], attn_z_loss_weight=1 (raw), with and without fcm."""
    _, _, ref, ours = fx
    assert rel(ours[key], ref[key]) < RTOL, (key, float(ours[key]), float(ref[key]))


def test_logits(fx):
    _, _, ref, ours = fx
    assert rel(ours["logits"], ref["logits"]) < RTOL


def test_next_embed_prediction(fx):
    """The head on the final-norm state predicts the same vectors."""
    _, _, ref, ours = fx
    assert rel(ours["next_pred"], ref["next_pred"]) < RTOL


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_next_embed_loss_matches_oracle(fx, kind):
    """tinyar's definition (target = next token's row, no position term) vs the numpy loops,
    on x-transformers' predictions."""
    _, weights, ref, ours = fx
    want = next_embed_oracle(ref["next_pred"], weights, ref["padded"], kind, with_position=False)
    assert rel(ours[f"next_{kind}"], want) < RTOL


def test_next_embed_differs_from_x_transformers_only_by_the_position_term(fx):
    """Adding the scaled position row to the target reproduces x-transformers' own L1 number,
    so that term is the whole difference (see tinyar/interop.py)."""
    _, weights, ref, ours = fx
    theirs = next_embed_oracle(ref["next_pred"], weights, ref["padded"], "l1", with_position=True)
    assert rel(theirs, ref["next_embed_xt"]) < RTOL
    assert rel(ours["next_l1"], ref["next_embed_xt"]) > 1e-2   # the definitions really differ


def test_gradients_of_the_total(fx):
    """d total / d every parameter (PAD targets, fcm mask, z-loss and next-embed weighted in) vs torch autograd."""
    _, weights, ref, ours = fx
    assert rel(ours["total"], ref["total"]) < RTOL
    bad = {k: rel(ours[f"grad/{k}"], ref[f"grad/{k}"]) for k in weights}
    assert set(bad) == {k[len("grad/"):] for k in ref if k.startswith("grad/")}
    bad = {k: d for k, d in bad.items() if not d < GRAD_RTOL}
    assert not bad, bad


# ---------------------------------------------------------------- interop errors (no torch needed)

def _edited(weights, drop=(), add=None):
    sd = {k: v for k, v in weights.items() if k not in drop}
    return sd | (add or {})


@pytest.mark.parametrize("drop, add, names, hint", [
    (("pos_emb.emb.weight",), {"attn_layers.rotary_pos_emb.inv_freq": np.zeros(8)},
     ["attn_layers.rotary_pos_emb.inv_freq", "pos_emb.emb.weight"], "rotary_pos_emb"),
    (("to_logits.weight",), {}, ["to_logits.weight"], "tie_embedding"),
    (("attn_layers.layers.1.1.ff.0.0.weight", "attn_layers.layers.1.1.ff.0.0.bias"),
     {"attn_layers.layers.1.1.ff.0.proj.weight": np.zeros((128, 16)), "attn_layers.layers.1.1.ff.0.proj.bias": np.zeros(128)},
     ["attn_layers.layers.1.1.ff.0.proj.weight", "attn_layers.layers.1.1.ff.0.0.weight"], "ff_glu"),
    ((), {"post_emb_norm.gamma": np.zeros(16)}, ["post_emb_norm.gamma"], "post_emb_norm"),
    ((), {"attn_layers.layers.2.1.to_q.bias": np.zeros(16)}, ["attn_layers.layers.2.1.to_q.bias"], "biases in attention"),
    ((), {"memory_tokens": np.zeros((2, 16))}, ["memory_tokens"], "num_memory_tokens"),
])
def test_unsupported_options_are_named(fx, drop, add, names, hint):
    with pytest.raises(ValueError) as e:
        from_x_transformers(_edited(fx[1], drop, add), heads=2)
    assert all(n in str(e.value) for n in names) and hint in str(e.value), str(e.value)


def test_shapes_tinyar_cannot_hold_are_named(fx):
    ff = "attn_layers.layers.1.1.ff.0.0.weight"
    with pytest.raises(ValueError, match=ff.replace(".", r"\.")):  # ff_mult=2
        from_x_transformers(_edited(fx[1], add={ff: np.zeros((32, 16), np.float32)}), heads=2)
    with pytest.raises(ValueError, match="heads=3"):
        from_x_transformers(fx[1], heads=3)


def test_one_head_without_output_projection_loads_the_identity(fx):
    """x-transformers builds no to_out for heads=1; tinyar's to_out must then be the identity."""
    weights = {k: v for k, v in fx[1].items() if not k.endswith("to_out.weight")}
    model = from_x_transformers(weights, heads=1)
    for block in model.blocks:
        np.testing.assert_array_equal(block.attn.to_out.weight.numpy(), np.eye(16, dtype=np.float32))
    with pytest.raises(ValueError, match="to_out"):
        from_x_transformers(weights, heads=2)


# ---------------------------------------------------------------- live (torch + x-transformers)

LIVE_SHAPES = [  # fresh weights; the first reuses the fixture's shape (and tinygrad's generated code)
    dict(xt_shape="fixture", seed=1),
    # one head: x-transformers has no output projection (dim_head must be dim), tinyar loads the identity
    dict(dim=16, depth=1, heads=1, dim_head=16, vocab=300, seq_len=64, batch=2, next_embed=False, seed=2),
    # x-transformers' default dim_head (64): attention 16x wider than the residual stream; the
    # fixture's B, T and dim, so only the attention kernels are new code for tinygrad
    dict(dim=16, depth=3, heads=4, dim_head=64, vocab=258, seq_len=9, batch=2, next_embed=True, seed=3),
]


@pytest.mark.slow
@live
@pytest.mark.parametrize("shape", LIVE_SHAPES, ids=lambda s: "fixture-shape" if "xt_shape" in s else
                         f"d{s['depth']}h{s['heads']}v{s['vocab']}t{s['seq_len']}")
def test_live_parity(shape, capsys):
    shape = dict(xt.FIXTURE_SHAPE, seed=shape["seed"]) if "xt_shape" in shape else shape
    net, state = xt.build(**shape)
    tokens, padded = xt.batches(np.random.default_rng(shape["seed"]), shape["batch"], shape["seq_len"])
    ref = xt.reference(net, tokens, padded, seed=shape["seed"])
    model = from_x_transformers(state, heads=shape["heads"])
    ours = tinyar_numbers(model, tokens, padded, ~ref["kv_mask"][:, :-1], xt.ZLOSS_WEIGHT, xt.NEXT_EMBED_WEIGHT)
    diffs = {k: rel(ours[k], ref[k]) for k in ("ce", "ce_pad", "ce_fcm", "zloss", "zloss_fcm", "logits", "total")}
    if shape["next_embed"]:
        diffs["next_pred"] = rel(ours["next_pred"], ref["next_pred"])
        diffs["next_mse"] = rel(ours["next_mse"], next_embed_oracle(ref["next_pred"], state, padded, "mse", False))
    grads = {k: rel(ours[f"grad/{k}"], ref[f"grad/{k}"]) for k in state}
    with capsys.disabled():
        print(f"\n  {shape}: worst forward {max(diffs.values()):.1e}, worst gradient {max(grads.values()):.1e}")
    assert all(d < RTOL for d in diffs.values()), diffs
    assert all(d < GRAD_RTOL for d in grads.values()), grads


@pytest.mark.slow
@live
@pytest.mark.parametrize("option, hint", [
    (dict(attn_layers=dict(rotary_pos_emb=True)), "rotary_pos_emb"),
    (dict(attn_layers=dict(ff_glu=True)), "ff_glu"),
    (dict(attn_layers=dict(use_rmsnorm=True)), "use_rmsnorm"),
    (dict(attn_layers=dict(sandwich_norm=True)), "sandwich_norm"),
    (dict(attn_layers=dict(attn_kv_heads=1)), "to_k"),
    (dict(attn_layers=dict(ff_mult=2)), "ff.0.0.weight"),
    (dict(tie_embedding=True), "tie_embedding"),
    (dict(num_memory_tokens=2), "num_memory_tokens"),
    (dict(post_emb_norm=True), "post_emb_norm"),
])
def test_live_unsupported_options_raise(option, hint):
    """Real x-transformers state dicts with options tinyar lacks: a ValueError, never a model."""
    layers = dict(dim=16, depth=1, heads=2, **option.get("attn_layers", {}))
    net = x_transformers.TransformerWrapper(num_tokens=20, max_seq_len=8, attn_layers=x_transformers.Decoder(**layers),
                                            **{k: v for k, v in option.items() if k != "attn_layers"})
    with pytest.raises(ValueError, match=hint):
        from_x_transformers({k: v.numpy() for k, v in net.state_dict().items()}, heads=2)
