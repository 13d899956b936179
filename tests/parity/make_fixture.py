"""x-transformers' own numbers, for tinyar's parity tests. Needs the `parity` extra (torch, x-transformers).

    pip install -e '.[parity]'
    python tests/parity/make_fixture.py        # rewrites tests/parity/fixture.npz (~0.1 MB)

The fixture lets the normal test suite check parity without torch. tests/test_parity.py
also imports `build` and `reference` from here for its live tests on fresh weights.

Every number is x-transformers' forward/backward run in float64 on float32 weights (the
weights tinyar loads), so the reference itself carries no float32 rounding: a difference
the tests measure is tinyar's.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper

from tinyar.data import PAD

# PAD (257) is the wrapper's ignore_index *and* pad_value: it ignores targets == ignore_index and
# turns such inputs into pad_value, so with both = PAD the inputs stay exactly what tinyar sees.
MASK_PROB = 0.3          # the wrapper's fcm mask_prob
ZLOSS_WEIGHT = 0.01      # weights in the gradient check's total: big enough that a wrong z-loss or
NEXT_EMBED_WEIGHT = 0.5  # next-embed gradient would move the total's gradients far past 1e-4
FIXTURE = Path(__file__).with_name("fixture.npz")
# conftest's TINY_NE (B=2, T=8, dim 16, 2 layers, 2 heads, next-embed head), so the parity tests reuse
# the kernels tinygrad already generated for the oracle tests; the wrapper runs the net on all
# T+1 = 9 tokens, so the position table has 9 rows.
FIXTURE_SHAPE = dict(dim=16, depth=2, heads=2, dim_head=8, vocab=258, seq_len=9, batch=2, next_embed=True)


def build(dim, depth, heads, dim_head, vocab, seq_len, next_embed, seed, **_) -> tuple[TransformerWrapper, dict]:
    """A default x-transformers decoder with random weights -> (float64 net, float32 state dict).

    x-transformers starts every LayerNorm scale at exactly 1 (stored gamma = 0); the gammas are
    redrawn so that a wrong gamma conversion can't hide behind zeros."""
    torch.manual_seed(seed)
    net = TransformerWrapper(num_tokens=vocab, max_seq_len=seq_len, add_continuous_pred_head=next_embed,
                             attn_layers=Decoder(dim=dim, depth=depth, heads=heads, attn_dim_head=dim_head))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):
                p.normal_(0.0, 0.3)
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    return copy.deepcopy(net).double(), state


def batches(rng: np.random.Generator, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (B, T+1) token batches, T+1 = seq_len: random bytes, and the same with PAD targets
    (row 0 has PAD scattered through it, row 1 ends in PAD; every row keeps valid targets)."""
    tokens = rng.integers(0, 256, size=(batch, seq_len)).astype(np.int64)
    padded = tokens.copy()
    padded[0, rng.choice(np.arange(2, seq_len), size=seq_len // 3, replace=False)] = PAD
    if batch > 1:
        padded[1, -max(1, seq_len // 4):] = PAD
    return tokens, padded


def draw_fcm_mask(net, tokens: torch.Tensor, seed: int) -> tuple[float, np.ndarray]:
    """Run the wrapper with mask_prob and catch the key mask it draws. -> (ce, kv_mask (B,T+1), True = visible)"""
    seen = {}
    hook = net.register_forward_pre_hook(lambda m, a, kw: seen.update(kv=kw["self_attn_kv_mask"]), with_kwargs=True)
    try:
        torch.manual_seed(seed)
        ce = AutoregressiveWrapper(net, ignore_index=PAD, pad_value=PAD, mask_prob=MASK_PROB,
                                   next_embed_loss_weight=0.0)(tokens)
    finally:
        hook.remove()
    return ce.item(), seen["kv"].numpy().copy()


def reference(net, tokens: np.ndarray, padded: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Every loss component x-transformers computes, plus the torch-autograd gradient of tinyar's total.

    Keys: ce, ce_pad, ce_fcm, kv_mask, zloss, zloss_fcm, logits, next_pred, next_embed_xt,
    total, grad/<x-transformers parameter name>."""
    x, xp = torch.from_numpy(tokens), torch.from_numpy(padded)
    inp, inp_pad = x[:, :-1], xp[:, :-1]
    wrapper = AutoregressiveWrapper(net, ignore_index=PAD, pad_value=PAD, next_embed_loss_weight=0.0)
    out = {}
    with torch.no_grad():
        out["ce"] = wrapper(x).item()
        out["ce_pad"] = wrapper(xp).item()
        out["ce_fcm"], kv = draw_fcm_mask(net, x, seed)
        out["kv_mask"] = kv
        keep = torch.from_numpy(kv[:, :-1])       # tinyar's inputs are tokens[:, :-1]: drop the last key
        logits, inter = net(inp, return_attn_z_loss=True, attn_z_loss_weight=1.0)
        out["logits"], out["zloss"] = logits.numpy(), inter.attn_z_loss.item()
        # the wrapper runs the net on all T+1 tokens; causal attention makes the first T the same
        whole = net(x)[:, :-1].numpy()
        tol = 1e-9 if logits.dtype == torch.float64 else 1e-5
        assert np.abs(whole - out["logits"]).max() < tol * np.abs(whole).max(), "causality broken?"
        _, inter = net(inp, self_attn_kv_mask=keep, return_attn_z_loss=True, attn_z_loss_weight=1.0)
        out["zloss_fcm"] = inter.attn_z_loss.item()
        if net.add_continuous_pred_head:
            _, (pred, _) = net(inp_pad, return_next_embed_pred=True)
            out["next_pred"] = pred.numpy()
            with_next = AutoregressiveWrapper(net, ignore_index=PAD, pad_value=PAD, next_embed_loss_weight=1.0)
            out["next_embed_xt"] = with_next(xp).item() - out["ce_pad"]   # its L1 with the position term

    # tinyar's total on the padded batch with the fcm mask, through x-transformers' modules:
    # ce + w_z * zloss + w_n * mse(pred, token row of the next token, detached)
    params = dict(net.named_parameters())
    tgt = xp[:, 1:]
    has_next = net.add_continuous_pred_head
    out_, inter = net(inp_pad, self_attn_kv_mask=keep, return_attn_z_loss=True, attn_z_loss_weight=1.0,
                      return_next_embed_pred=has_next)
    logits, pred = (out_[0], out_[1][0]) if has_next else (out_, None)
    total = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD) + ZLOSS_WEIGHT * inter.attn_z_loss
    if has_next:
        valid = tgt != PAD
        target = net.token_emb.emb.weight[tgt].detach()
        total = total + NEXT_EMBED_WEIGHT * ((pred - target) ** 2).mean(-1)[valid].mean()
    grads = torch.autograd.grad(total, list(params.values()))
    out["total"] = total.item()
    out.update({f"grad/{k}": g.numpy() for k, g in zip(params, grads)})
    return out


def main() -> None:
    shape = FIXTURE_SHAPE
    net, state = build(**shape, seed=0)
    tokens, padded = batches(np.random.default_rng(0), shape["batch"], shape["seq_len"])
    ref = reference(net, tokens, padded, seed=0)
    arrays = {"heads": np.array(shape["heads"]), "pad": np.array(PAD), "mask_prob": np.array(MASK_PROB),
              "zloss_weight": np.array(ZLOSS_WEIGHT), "next_embed_weight": np.array(NEXT_EMBED_WEIGHT),
              "tokens": tokens.astype(np.int32), "padded": padded.astype(np.int32)}
    arrays.update({f"weight/{k}": v for k, v in state.items()})
    for k, v in ref.items():  # big arrays in float32 (rounding ~6e-8, far below the tolerances), scalars in float64
        v = np.asarray(v)
        arrays[k] = v.astype(np.float32) if v.dtype == np.float64 and v.size > 1 else v
    np.savez_compressed(FIXTURE, **arrays)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1e3:.0f} kB):",
          ", ".join(f"{k}={ref[k]:.6f}" for k in ("ce", "ce_pad", "ce_fcm", "zloss", "zloss_fcm", "next_embed_xt", "total")))


if __name__ == "__main__":
    main()
