"""Every loss piece against the numpy oracle (tests/oracle.py), forward and backward.

Function-level tests use small fixed shapes (B=2, T=8, V=258, D=16, H=2, depth 2); model-level
tests share the one tiny model of conftest.py. Each test's comment says what it proves.
"""
from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from tinygrad import Context, Tensor, dtypes

import oracle
from conftest import KIND, NEXT_EMBED_WEIGHT, TARGET_ONLY, ZLOSS_WEIGHT, Spy
from tinyar.config import COMPONENTS
from tinyar.data import MASK, PAD, VOCAB
from tinyar.loss import (attention_zloss, autoregressive_loss, choose_mask_positions, cross_entropy,
                         next_embed_loss, num_masked, replace_masked, shift)
from tinyar.model import Attention, Decoder

B, T, V, D, H, L = 2, 8, VOCAB, 16, 2, 2
RTOL, ATOL = 1e-4, 1e-5   # float32 tinygrad vs float64 oracle


def close(actual, expected, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rtol, atol=atol)


def targets(rng, n_pad=3) -> np.ndarray:
    """(B,T) random byte targets with n_pad of them set to PAD."""
    tgt = rng.integers(0, 256, (B, T)).astype(np.int32)
    tgt.flat[rng.choice(B * T, n_pad, replace=False)] = PAD
    return tgt


# ---------------------------------------------------------------- tokens, shift, masking
def test_special_ids_are_the_ones_the_oracle_assumes():
    # proves the oracle and tinyar agree on the ids: bytes 0..255, then MASK, then PAD
    assert (MASK, PAD, VOCAB) == (oracle.MASK, oracle.PAD, 258)


def test_shift_on_arange_targets_are_inputs_plus_one():
    # proves teacher forcing: tgt[b,t] is the token right after inp[b,t], shapes (B,T)
    tokens = np.arange(B * (T + 1), dtype=np.int32).reshape(B, T + 1)
    inp, tgt = shift(Tensor(tokens))
    inp, tgt = inp.numpy(), tgt.numpy()
    assert inp.shape == tgt.shape == (B, T)
    np.testing.assert_array_equal(tgt, inp + 1)
    np.testing.assert_array_equal(inp, tokens[:, :-1])


@pytest.mark.parametrize("T_, p", [(8, 0.0), (8, 0.15), (8, 0.25), (8, 0.99), (7, 0.5), (128, 0.15), (1, 0.9), (2, 0.5)])
def test_num_masked_is_floor_T_p_capped_at_T_minus_1(T_, p):
    # proves k = min(floor(T p), T-1): never every position, p=0 masks nothing
    assert num_masked(T_, p) == min(math.floor(T_ * p), T_ - 1)


@pytest.mark.parametrize("B_, T_, p", [(5, 8, 0.25), (3, 8, 0.99), (4, 128, 0.15), (2, 8, 0.0), (6, 2, 0.6)])
def test_choose_mask_positions_exact_count_and_never_position_0(B_, T_, p):
    # proves every row masks exactly k distinct positions, none of them position 0
    mask = choose_mask_positions(np.random.default_rng(1), B_, T_, p)
    assert mask.shape == (B_, T_) and mask.dtype == bool
    np.testing.assert_array_equal(mask.sum(1), min(math.floor(T_ * p), T_ - 1))
    assert not mask[:, 0].any()


def test_choose_mask_positions_uniform_over_1_to_T_minus_1():
    # proves the draw is uniform: each position 1..7 and each pair of them equally likely
    N, k = 21000, 2
    mask = choose_mask_positions(np.random.default_rng(2), N, T, 0.25)
    freq = mask[:, 1:].mean(0)                                # P(position i chosen) = k/(T-1)
    np.testing.assert_allclose(freq, k / (T - 1), atol=0.015)  # ~5 sigma
    pairs = np.array([(mask[:, i] & mask[:, j]).mean() for i, j in combinations(range(1, T), 2)])
    np.testing.assert_allclose(pairs, 1 / math.comb(T - 1, k), atol=0.01)  # every 2-subset ~1/21
    again = choose_mask_positions(np.random.default_rng(2), N, T, 0.25)
    np.testing.assert_array_equal(mask, again)                # the rng alone decides


def test_replace_masked_puts_MASK_exactly_at_masked_positions():
    # proves replace mode swaps in MASK where mask is True and keeps every other token
    inp = np.arange(B * T, dtype=np.int32).reshape(B, T)
    mask = np.zeros((B, T), bool)
    mask[0, [1, 6]] = mask[1, 3] = True
    out = replace_masked(Tensor(inp), Tensor(mask)).numpy()
    np.testing.assert_array_equal(out, np.where(mask, MASK, inp))


# ---------------------------------------------------------------- cross-entropy
def _ce(logits: np.ndarray, tgt: np.ndarray):
    """tinyar's cross_entropy and its gradient w.r.t. logits, one graph for every call here."""
    lt = Tensor(logits.astype(np.float32))
    tt = Tensor(tgt)
    ce = cross_entropy(lt, tt, tt != PAD)
    (g,) = ce.gradient(lt)
    Tensor.realize(ce, g)
    return ce.item(), g.numpy()


def test_cross_entropy_matches_oracle_forward_and_grad():
    # proves CE value and d CE / d logits equal the loop oracle, PAD targets excluded
    rng = np.random.default_rng(3)
    logits, tgt = 3 * rng.normal(size=(B, T, V)), targets(rng)
    ce, g = _ce(logits, tgt)
    close(ce, oracle.cross_entropy(logits.astype(np.float32), tgt))
    close(g, oracle.cross_entropy_grad(logits.astype(np.float32), tgt), atol=1e-7)


def test_cross_entropy_ignores_pad_positions():
    # proves logits at PAD targets change nothing (value, and they get zero gradient),
    # and that an all-PAD batch gives 0 rather than 0/0
    rng = np.random.default_rng(4)
    logits, tgt = rng.normal(size=(B, T, V)), targets(rng)
    ce, g = _ce(logits, tgt)
    changed = logits.copy()
    changed[tgt == PAD] = 50 * rng.normal(size=((tgt == PAD).sum(), V))
    ce2, g2 = _ce(changed, tgt)
    assert ce2 == pytest.approx(ce, rel=1e-6)
    np.testing.assert_array_equal(g2[tgt == PAD], 0)
    close(g2, g, atol=1e-8)
    # the PAD rows would matter if they counted: including them moves the oracle a lot
    assert abs(oracle.cross_entropy(changed, tgt, pad=-1) - ce) > 1.0
    ce0, g0 = _ce(logits, np.full((B, T), PAD, np.int32))
    assert ce0 == 0 and not g0.any()


def test_cross_entropy_stable_at_1000x_logits():
    # proves the log-softmax subtracts the max: 1000x logits give finite values equal to the oracle
    rng = np.random.default_rng(5)
    logits, tgt = 1000 * rng.normal(size=(B, T, V)), targets(rng)
    ce, g = _ce(logits, tgt)
    assert math.isfinite(ce) and np.isfinite(g).all()
    close(ce, oracle.cross_entropy(logits.astype(np.float32), tgt), rtol=1e-5)
    close(g, oracle.cross_entropy_grad(logits.astype(np.float32), tgt), atol=1e-6)


# ---------------------------------------------------------------- z-loss, next-embed
def test_attention_zloss_matches_oracle_and_sums_layers_before_squaring():
    # proves zloss = mean_(b,i) sum_h (sum_l lse_l)^2 and its gradient per layer, and that the
    # per-layer-squared variant (a classic mistake) would be told apart
    rng = np.random.default_rng(6)
    lses = [1.0 + rng.normal(size=(B, H, T)) for _ in range(L)]
    ts = [Tensor(a.astype(np.float32)) for a in lses]
    z = attention_zloss(ts)
    gs = z.gradient(*ts)
    Tensor.realize(z, *gs)
    lses32 = [a.astype(np.float32) for a in lses]
    close(z.item(), oracle.zloss(lses32))
    for g, want in zip(gs, oracle.zloss_grad(lses32)):
        close(g.numpy(), want)
    assert abs(oracle.zloss_per_layer_squared(lses32) - z.item()) > 0.1 * z.item()


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_next_embed_loss_matches_oracle_forward_and_grad(kind):
    # proves mse/l1 are means over valid positions x D dims, with PAD rows getting no gradient
    rng = np.random.default_rng(7)
    pred, target, tgt = rng.normal(size=(B, T, D)), rng.normal(size=(B, T, D)), targets(rng)
    pt, tt, gt = Tensor(pred.astype(np.float32)), Tensor(target.astype(np.float32)), Tensor(tgt)
    loss = next_embed_loss(pt, tt, gt != PAD, kind)
    (g,) = loss.gradient(pt)
    Tensor.realize(loss, g)
    p32, t32 = pred.astype(np.float32), target.astype(np.float32)
    close(loss.item(), oracle.next_embed(p32, t32, tgt, kind))
    close(g.numpy(), oracle.next_embed_grad(p32, t32, tgt, kind), atol=1e-8)
    assert not g.numpy()[tgt == PAD].any()


def test_oracle_gradients_match_finite_differences():
    # proves the oracle's analytic gradients (used above) are the derivatives of its forward
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(2, 3, 5))
    tgt = np.array([[0, 4, PAD], [2, 2, 1]])
    close(oracle.cross_entropy_grad(logits, tgt),
          oracle.numerical_grad(lambda x: oracle.cross_entropy(x, tgt), logits), rtol=1e-6, atol=1e-9)
    lses = [rng.normal(size=(2, 2, 3)) for _ in range(2)]
    for l in range(2):
        f = lambda x, l=l: oracle.zloss([x if i == l else a for i, a in enumerate(lses)])
        close(oracle.zloss_grad(lses)[l], oracle.numerical_grad(f, lses[l]), rtol=1e-6, atol=1e-9)
    pred, target = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    for kind in ("mse", "l1"):
        close(oracle.next_embed_grad(pred, target, tgt, kind),
              oracle.numerical_grad(lambda x: oracle.next_embed(x, target, tgt, kind), pred), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- attention
def _attention(x: np.ndarray, hidden=None):
    """tinyar's Attention (dim 16, 2 heads of 8) with O(1) random weights -> weights, out, lse."""
    rng = np.random.default_rng(9)
    attn = Attention(D, H, D // H, out_std=0.02)
    w = {n: rng.normal(0, D ** -0.5, (D, D)).astype(np.float32) for n in ("to_q", "to_k", "to_v", "to_out")}
    for n, a in w.items():
        getattr(attn, n).weight.assign(Tensor(a)).realize()
    out, lse = attn(Tensor(x.astype(np.float32)), None if hidden is None else Tensor(hidden))
    Tensor.realize(out, lse)
    return w, out.numpy(), lse.numpy()


def _oracle_attention(w, x, hidden=None):
    split = lambda a: a.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)  # (B,T,D) -> (B,H,T,Dh)
    x = x.astype(np.float32).astype(np.float64)
    o, lse = oracle.attention(split(x @ w["to_q"].T), split(x @ w["to_k"].T), split(x @ w["to_v"].T), hidden)
    return o.transpose(0, 2, 1, 3).reshape(B, T, D) @ w["to_out"].T, lse


@pytest.mark.parametrize("fcm", [False, True])
def test_attention_matches_oracle_output_and_lse(fcm):
    # proves causal attention (and fcm's hidden keys) and its pre-softmax log-sum-exp per head
    rng = np.random.default_rng(10)
    x = 2 * rng.normal(size=(B, T, D))
    hidden = None
    if fcm:
        hidden = np.zeros((B, T), bool)
        hidden[0, [1, 2, 6]] = hidden[1, [3, 7]] = True
    w, out, lse = _attention(x, hidden)
    want_out, want_lse = _oracle_attention(w, x, hidden)
    close(out, want_out)
    close(lse, want_lse)
    # the z-loss's quantity is not trivially log(#keys): scores matter
    assert np.abs(lse - np.log(np.arange(1, T + 1))).max() > 0.5


def test_fcm_hidden_key_reaches_no_other_query():
    # proves fcm hides keys: changing x at a hidden position changes no other query's output
    # or lse, while the same change at a visible position reaches every later query
    rng = np.random.default_rng(10)
    x = 2 * rng.normal(size=(B, T, D))
    hidden = np.zeros((B, T), bool)
    hidden[0, [1, 2, 6]] = hidden[1, [3, 7]] = True
    _, out, lse = _attention(x, hidden)
    x2 = x.copy()
    x2[0, 6] += 3 * rng.normal(size=D)                 # hidden position of row 0
    _, out2, lse2 = _attention(x2, hidden)
    others = np.ones((B, T), bool)
    others[0, 6] = False
    close(out2[others], out[others], rtol=1e-6, atol=1e-6)
    close(lse2.transpose(0, 2, 1)[others], lse.transpose(0, 2, 1)[others], rtol=1e-6, atol=1e-6)
    assert np.abs(out2[0, 6] - out[0, 6]).max() > 1e-3  # its own query (keys 0,3,4,5) still moves
    x3 = x.copy()
    x3[0, 3] += 3 * rng.normal(size=D)                 # visible position of row 0
    _, out3, _ = _attention(x3, hidden)
    assert (np.abs(out3[0, 3:] - out[0, 3:]).max(-1) > 1e-4).all()


# ---------------------------------------------------------------- the whole model and loss
def test_decoder_and_unmasked_loss_match_oracle_with_weights_off(tiny):
    # proves the decoder forward (logits, per-layer lse, final hidden) equals the numpy
    # decoder, that off weights give total == ce, and that zloss / next_embed are still
    # computed raw when their weights are 0 (as the docstring says)
    spy = Spy(tiny.model)
    out = autoregressive_loss(spy, tiny.tokens)
    s = spy.seen
    Tensor.realize(*out.values(), s["logits"], s["hidden"], *s["lses"])
    inp, tgt = tiny.tokens[:, :-1], tiny.tokens[:, 1:]
    logits, lses, hidden = oracle.decoder_forward(tiny.weights, inp, tiny.cfg.heads)
    close(s["logits"].numpy(), logits, rtol=1e-4, atol=1e-4)
    close(s["hidden"].numpy(), hidden, rtol=1e-4, atol=1e-4)
    for got, want in zip(s["lses"], lses):
        close(got.numpy(), want, rtol=1e-4, atol=1e-4)
    want = oracle.autoregressive_loss(tiny.weights, tiny.tokens, tiny.cfg.heads)
    for k in ("ce", "zloss", "next_embed"):
        close(out[k].item(), want[k])
    assert out["total"].item() == out["ce"].item()
    assert want["zloss"] > 0 and want["next_embed"] > 0


@pytest.mark.parametrize("mode", ["replace", "fcm"])
def test_autoregressive_loss_matches_oracle(tiny, mode):
    # proves every component and the weighted total equal the oracle's, under masking
    # (replace with mse, fcm with l1), with PAD targets in the batch
    got = tiny.run(mode)["loss"]
    assert tuple(got) == COMPONENTS   # the keys every training row, table and plot panel uses
    want = oracle.autoregressive_loss(tiny.weights, tiny.tokens, tiny.cfg.heads, mask_positions=tiny.mask,
                                      mask_mode=mode, zloss_weight=ZLOSS_WEIGHT,
                                      next_embed_weight=NEXT_EMBED_WEIGHT, next_embed_kind=KIND[mode])
    for k in ("ce", "zloss", "next_embed", "total"):
        close(got[k], want[k])
    close(got["total"], got["ce"] + ZLOSS_WEIGHT * got["zloss"] + NEXT_EMBED_WEIGHT * got["next_embed"], rtol=1e-6)


def _head_losses(tiny, hidden, tgt, kind):
    """The part of the oracle total that reads the final hidden state: ce + w * next_embed."""
    W = tiny.weights
    logits = np.einsum("btd,vd->btv", hidden, W["head.weight"].astype(np.float64))
    target = W["tok_emb"].astype(np.float64)[tgt]
    return oracle.cross_entropy(logits, tgt) + \
        NEXT_EMBED_WEIGHT * oracle.next_embed(oracle.next_embed_head(W, hidden), target, tgt, kind)


@pytest.mark.parametrize("mode", ["replace", "fcm"])
def test_total_gradient_wrt_logits_hidden_pred_matches_oracle(tiny, mode):
    # proves d total / d logits = CE's (softmax - onehot)/n, d total / d pred = w * next-embed's,
    # and d total / d hidden (through the head and the next-embed head) = finite differences
    run, kind = tiny.run(mode), KIND[mode]
    tgt = tiny.tokens[:, 1:]
    close(run["dlogits"], oracle.cross_entropy_grad(run["logits"], tgt), atol=1e-7)
    target = tiny.weights["tok_emb"][tgt]
    close(run["dpred"], NEXT_EMBED_WEIGHT * oracle.next_embed_grad(run["pred"], target, tgt, kind), atol=1e-7)
    hidden = run["hidden"].astype(np.float64)
    want = oracle.numerical_grad(lambda h: _head_losses(tiny, h, tgt, kind), hidden, eps=1e-6)
    close(run["dhidden"], want, rtol=1e-3, atol=1e-6)
    assert not run["dlogits"][tgt == PAD].any() and not run["dpred"][tgt == PAD].any()


@pytest.mark.parametrize("mode", ["replace", "fcm"])
def test_total_gradient_wrt_every_weight_matches_oracle_finite_differences(tiny, mode):
    # proves backprop through the whole model and loss: for each weight tensor, grad . u
    # equals the oracle total's directional derivative along a random u (target detached)
    run, rng = tiny.run(mode), np.random.default_rng(11)
    W0 = {k: v.astype(np.float64) for k, v in tiny.weights.items()}

    def total(W):
        return oracle.autoregressive_loss(W, tiny.tokens, tiny.cfg.heads, mask_positions=tiny.mask, mask_mode=mode,
                                          zloss_weight=ZLOSS_WEIGHT, next_embed_weight=NEXT_EMBED_WEIGHT,
                                          next_embed_kind=KIND[mode], target_table=W0["tok_emb"])["total"]

    eps = 1e-5
    for name, w in W0.items():
        u = rng.normal(size=w.shape)
        fd = (total({**W0, name: w + eps * u}) - total({**W0, name: w - eps * u})) / (2 * eps)
        got = float((run["grad"][name].astype(np.float64) * u).sum())
        assert got == pytest.approx(fd, rel=2e-3, abs=1e-4), name


def test_next_embed_target_is_detached(tiny):
    # proves no gradient reaches the embedding through the next-embed target: the row of a
    # byte that occurs only as a target gets exactly 0, though an undetached target would
    # give it a clearly non-zero gradient
    grad = tiny.run("replace")["grad"]["tok_emb"]
    assert not grad[TARGET_ONLY].any()
    assert np.abs(grad[tiny.tokens[0, 1]]).max() > 0      # an input row does learn
    W0 = {k: v.astype(np.float64) for k, v in tiny.weights.items()}
    u = np.zeros_like(W0["tok_emb"])
    u[TARGET_ONLY] = np.random.default_rng(12).normal(size=D)
    f = lambda s: oracle.autoregressive_loss({**W0, "tok_emb": W0["tok_emb"] + s * u}, tiny.tokens, tiny.cfg.heads,
                                             mask_positions=tiny.mask, next_embed_weight=NEXT_EMBED_WEIGHT,
                                             zloss_weight=ZLOSS_WEIGHT)["total"]
    assert abs((f(1e-5) - f(-1e-5)) / 2e-5) > 1e-3           # undetached: the row would move


def test_replace_mode_feeds_MASK_and_keeps_targets(tiny):
    # proves replace mode gives the model MASK at exactly the chosen positions, hides no keys,
    # and still scores every original target (scoring masked targets would change the CE)
    run = tiny.run("replace")
    inp = tiny.tokens[:, :-1]
    np.testing.assert_array_equal(run["inp"], np.where(tiny.mask, MASK, inp))
    assert run["hidden_keys"] is None
    tgt_masked = tiny.tokens.copy()
    tgt_masked[:, 1:][tiny.mask] = MASK
    wrong = oracle.autoregressive_loss(tiny.weights, tgt_masked, tiny.cfg.heads, mask_positions=tiny.mask)["ce"]
    assert abs(wrong - run["loss"]["ce"]) > 1e-2


def test_fcm_mode_keeps_inputs_and_hides_keys_in_every_layer(tiny):
    # proves fcm leaves the input tokens alone, hides exactly the chosen keys, and that every
    # layer's lse is the one over visible keys only (differs from the unmasked lse)
    run = tiny.run("fcm")
    np.testing.assert_array_equal(run["inp"], tiny.tokens[:, :-1])
    np.testing.assert_array_equal(run["hidden_keys"], tiny.mask)
    _, lses, _ = oracle.decoder_forward(tiny.weights, tiny.tokens[:, :-1], tiny.cfg.heads, tiny.mask)
    _, open_lses, _ = oracle.decoder_forward(tiny.weights, tiny.tokens[:, :-1], tiny.cfg.heads)
    for got, want, unmasked in zip(run["lses"], lses, open_lses):
        close(got, want, rtol=1e-4, atol=1e-4)
        assert np.abs(got - unmasked).max() > 1e-2


def test_fcm_hidden_token_reaches_only_its_own_position(tiny):
    # proves, end to end through every layer, that a token at an fcm-hidden position
    # influences only its own position's logits, while a visible one reaches later positions
    hidden = Tensor(tiny.mask)

    def logits_of(inp):
        logits, lses, _ = tiny.model(Tensor(inp), hidden)
        Tensor.realize(logits, *lses)
        return logits.numpy()

    inp = tiny.tokens[:, :-1].copy()
    base = logits_of(inp)
    j = 5
    assert tiny.mask[0, j] and not tiny.mask[0, j - 1]
    changed = inp.copy()
    changed[0, j] = (inp[0, j] + 1) % 256
    moved = np.abs(logits_of(changed) - base).max(-1)   # (B,T)
    assert moved[0, j] > 1e-3
    moved[0, j] = 0
    assert moved.max() < 1e-5
    changed = inp.copy()
    changed[0, j - 1] = (inp[0, j - 1] + 1) % 256
    moved = np.abs(logits_of(changed) - base).max(-1)
    assert (moved[0, j - 1:] > 1e-4).all() and moved[1].max() < 1e-5


def test_masking_is_drawn_only_in_training(tiny):
    # proves mask_prob alone never masks outside Context(TRAINING=1) (eval is unmasked), and in
    # training draws k per row, never position 0, in both modes, with choose_mask_positions
    # (the function Trainer.next_batch uses): same rng, same positions
    k = num_masked(T, 0.4)
    spy = Spy(tiny.model)
    autoregressive_loss(spy, tiny.tokens, mask_prob=0.4)
    np.testing.assert_array_equal(spy.seen["inp"].numpy(), tiny.tokens[:, :-1])
    assert spy.seen["hidden_keys"] is None
    with Context(TRAINING=1):
        autoregressive_loss(spy, tiny.tokens, mask_prob=0.4, rng=np.random.default_rng(13))
        is_mask = spy.seen["inp"].numpy() == MASK
        autoregressive_loss(spy, tiny.tokens, mask_prob=0.4, mask_mode="fcm", rng=np.random.default_rng(13))
        hidden = spy.seen["hidden_keys"].numpy()
    for m in (is_mask, hidden):
        np.testing.assert_array_equal(m.sum(1), k)
        assert not m[:, 0].any()
        np.testing.assert_array_equal(m, choose_mask_positions(np.random.default_rng(13), *m.shape, 0.4))


def test_mask_positions_used_as_given_and_uint8_tokens_get_MASK(tiny):
    # proves an explicit mask is applied even outside training (mask_prob ignored), and that
    # a uint8 token Tensor still gets the id MASK=256 (not 256 wrapped to 0)
    spy = Spy(tiny.model)
    autoregressive_loss(spy, Tensor(tiny.tokens.clip(0, 255).astype(np.uint8)), mask_prob=0.9,
                        mask_positions=tiny.mask)
    inp = spy.seen["inp"].numpy()
    np.testing.assert_array_equal(inp[tiny.mask], MASK)
    np.testing.assert_array_equal(inp[~tiny.mask], tiny.tokens[:, :-1].clip(0, 255)[~tiny.mask])


def test_next_embed_weight_needs_a_head(tiny):
    # proves a model without a next-embed head reports next_embed as 0 and refuses a weight on it
    model = Decoder(tiny.cfg.replace(next_embed_head=False))
    out = autoregressive_loss(model, tiny.tokens)
    assert out["next_embed"].item() == 0
    with pytest.raises(ValueError, match="next-embed head"):
        autoregressive_loss(model, tiny.tokens, next_embed_weight=0.1)


def test_fcm_mask_hiding_position_0_is_refused(tiny):
    # proves a hand-made fcm mask that would leave query 0 with no visible key fails loudly, not as NaN
    mask = np.zeros((tiny.cfg.batch_size, tiny.cfg.seq_len), dtype=bool)
    mask[1, 0] = True
    model = Decoder(tiny.cfg)
    with pytest.raises(ValueError, match="position 0"):
        autoregressive_loss(model, tiny.tokens, mask_positions=mask, mask_mode="fcm")
