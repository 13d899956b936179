"""Move weights between x-transformers and tinyar, and what "the same loss" means.

    model = from_x_transformers({k: v.numpy() for k, v in net.state_dict().items()}, heads=8)
    state_dict, args = to_x_transformers(model)        # or a run folder; the inverse (tinyar/export.py)

`net` is `TransformerWrapper(attn_layers=Decoder(...))` with default options, optionally
`add_continuous_pred_head=True`. Weights are renamed, never re-derived, except two
conversions of storage conventions (both are x-transformers facts, see the README's
"Parity with x-transformers"):

    LayerNorm   tinyar weight = gamma + 1         (x-transformers stores scale - 1)
    positions   tinyar pos_emb = table * dim**-0.5 (x-transformers scales in the forward pass)

Loss parity, component by component (tests/test_parity.py checks each):
  ce       `AutoregressiveWrapper(net, ignore_index=PAD, pad_value=PAD)`: same number. The pad
           id matters: tinyar ignores targets == PAD (257); the wrapper ignores targets ==
           ignore_index and replaces such *inputs* by pad_value, so both must be PAD.
  fcm      the wrapper's `mask_prob` hides keys; pass `~self_attn_kv_mask[:, :-1]` as
           `mask_positions` with `mask_mode="fcm"` and the ce is the same.
  zloss    the wrapper runs the net on all T+1 tokens and averages over T+1 positions; tinyar
           runs on tokens[:, :-1] (T positions). Same number as the net run on tokens[:, :-1]
           with `return_attn_z_loss=True, attn_z_loss_weight=1`.
  next-embed  the prediction (head on the final-norm state) is the same. The *target* differs:
           x-transformers uses the next position's input embedding, token row + position row
           (`init_embeds[:, 1:]`), with L1; tinyar uses the token row alone (MSE by default,
           L1 with next_embed_kind="l1"). The position row is known before any data is seen,
           so tinyar asks the head to predict only what the next token *is*. With "l1" the two
           losses differ exactly by that position term:
               x-transformers  mean |pred_i - (E[x_{i+1}] + P[i+1])|
               tinyar          mean |pred_i - E[x_{i+1}]|
"""
from __future__ import annotations

import re

import numpy as np
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict, load_state_dict

from tinyar.config import Config
from tinyar.model import Decoder

# What each option tinyar lacks leaves in (or takes out of) a state dict; only for error messages.
_EXTRA_HINTS = (
    (r"rotary", "rotary_pos_emb"), (r"rel_pos", "rel_pos_bias"), (r"pos_emb\.scale", "scaled_sinu_pos_emb"),
    (r"memory_tokens", "num_memory_tokens"), (r"\.proj\.", "ff_glu"), (r"to_v_gate", "attn_gate_values"),
    (r"\.g$", "use_rmsnorm / use_scalenorm"), (r"\.0\.[12]\.gamma$", "sandwich_norm"),
    (r"post_emb_norm", "post_emb_norm"), (r"\.fn\.", "use_layerscale / macaron / custom layers"),
    (r"to_[qkv]\.bias|to_out\.bias", "biases in attention"))
_MISSING_HINTS = (
    (r"^to_logits", "tie_embedding"), (r"^pos_emb", "no learned absolute position table"),
    (r"ff\.[02].*bias", "ff_no_bias"), (r"gamma$", "a norm other than LayerNorm"))


def parameter_names(depth: int, next_embed: bool) -> dict[str, str]:
    """x-transformers state-dict name -> tinyar state-dict name, for the default decoder.

    Layer i of x-transformers alternates attention (even) and feed-forward (odd); tinyar's
    block j holds both, so layers 2j and 2j+1 become blocks.j."""
    names = {"token_emb.emb.weight": "tok_emb", "pos_emb.emb.weight": "pos_emb"}
    for j in range(depth):
        a, f, b = f"attn_layers.layers.{2 * j}", f"attn_layers.layers.{2 * j + 1}", f"blocks.{j}"
        names[f"{a}.0.0.gamma"] = f"{b}.attn_norm.weight"
        for p in ("to_q", "to_k", "to_v", "to_out"):
            names[f"{a}.1.{p}.weight"] = f"{b}.attn.{p}.weight"
        names[f"{f}.0.0.gamma"] = f"{b}.ff_norm.weight"
        for xt, ours in (("ff.0.0", "fc1"), ("ff.2", "fc2")):
            names[f"{f}.1.{xt}.weight"] = f"{b}.ff.{ours}.weight"
            names[f"{f}.1.{xt}.bias"] = f"{b}.ff.{ours}.bias"
    names["attn_layers.final_norm.gamma"] = "norm.weight"
    names["to_logits.weight"] = "head.weight"
    if next_embed:
        names["to_next_embed_pred.0.weight"] = "next_embed.fc1.weight"
        names["to_next_embed_pred.2.weight"] = "next_embed.fc2.weight"
    return names


def dim_scale(dim: int) -> float:
    """x-transformers multiplies its position table by dim**-0.5 in the forward pass."""
    return dim ** -0.5


def _describe(names: list[str], what: str, hints) -> str:
    likely = sorted({h for n in names for pattern, h in hints if re.search(pattern, n)})
    return f"{what}: {', '.join(names)}" + (f" (looks like: {'; '.join(likely)})" if likely else "")


def from_x_transformers(state_dict, heads: int) -> Decoder:
    """A tinyar Decoder with the weights of an x-transformers default decoder. -> Decoder

    `state_dict` maps names to arrays (numpy, or anything np.asarray takes); a leading `net.`
    (an AutoregressiveWrapper's state dict) is dropped. `heads` is not stored in the weights;
    dim, depth, dim_head, vocab, seq_len (the position table's rows) and the next-embed head
    are read off the arrays. Raises ValueError naming every parameter tinyar has no place for
    (rotary, GLU, tied embeddings, extra norms, attention biases, memory tokens, ...), every
    one it misses and every shape it can't hold, rather than load a model that computes
    something else. Options that leave no trace in the weights can't be detected: a
    non-causal Encoder, alibi_pos_bias, attn_qk_norm, l2norm_embed, norm_add_unit_offset=False."""
    sd = {k: np.asarray(v, dtype=np.float32) for k, v in state_dict.items()}
    if sd and all(k.startswith("net.") for k in sd):
        sd = {k[4:]: v for k, v in sd.items()}
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"attn_layers\.layers\.(\d+)\.", k))}
    depth = (max(layers, default=0) + 2) // 2
    if heads == 1:  # x-transformers leaves out a single head's output projection: it is the identity
        for j in range(depth):
            q, o = f"attn_layers.layers.{2 * j}.1.to_q.weight", f"attn_layers.layers.{2 * j}.1.to_out.weight"
            if o not in sd and q in sd and sd[q].shape[0] == sd[q].shape[1]:
                sd[o] = np.eye(sd[q].shape[0], dtype=np.float32)
    names = parameter_names(depth, any(k.startswith("to_next_embed_pred.") for k in sd))
    extra, missing = sorted(set(sd) - set(names)), sorted(set(names) - set(sd))
    if extra or missing:
        parts = ([_describe(extra, "parameters tinyar does not implement", _EXTRA_HINTS)] if extra else []) + \
                ([_describe(missing, "parameters of the default decoder missing here", _MISSING_HINTS)] if missing else [])
        raise ValueError("cannot load this x-transformers model into tinyar: " + "; ".join(parts))

    vocab, dim = sd["token_emb.emb.weight"].shape
    inner = sd["attn_layers.layers.0.1.to_q.weight"].shape[0]        # heads * dim_head
    if heads < 1 or inner % heads:
        raise ValueError(f"heads={heads} does not divide the attention width {inner} (= heads * dim_head)")
    cfg = Config(dim=dim, depth=depth, heads=heads, dim_head=inner // heads, vocab=vocab,
                 seq_len=sd["pos_emb.emb.weight"].shape[0], next_embed_head="to_next_embed_pred.0.weight" in names)
    model = Decoder(cfg)
    shapes = {k: v.shape for k, v in get_state_dict(model).items()}
    wrong = [f"{xt} {sd[xt].shape} (tinyar needs {shapes[ours]})" for xt, ours in names.items()
             if sd[xt].shape != shapes[ours]]
    if wrong:  # e.g. ff_mult != 4 or attn_kv_heads
        raise ValueError("cannot load this x-transformers model into tinyar, shapes differ: " + ", ".join(wrong))

    ours = {}
    for xt, name in names.items():
        w = sd[xt]
        if xt.endswith("gamma"):
            w = w + 1.0                          # stored as scale - 1
        elif xt == "pos_emb.emb.weight":
            w = w * np.float32(dim_scale(dim))   # x-transformers scales the table in forward
        ours[name] = Tensor(w)
    load_state_dict(model, ours, verbose=False)
    return model


def to_x_transformers(run_or_model) -> tuple[dict[str, np.ndarray], dict]:
    """The inverse of from_x_transformers. -> (state_dict, constructor arguments)

    `run_or_model` is a Decoder, or a run folder (its newest checkpoint) or checkpoint file.
    state_dict maps x-transformers' names to float32 numpy arrays (torch.from_numpy each and
    load_state_dict, strict). The arguments (tinyar.export.constructor_args) hold the exact
    keyword arguments of TransformerWrapper, Decoder and AutoregressiveWrapper for this run,
    the wrapper's forward keywords, the optimizer settings and `notes`: what x-transformers
    computes differently for this run's loss settings (replace masking, MSE next-embed, ...)."""
    from tinyar.export import constructor_args, run_weights
    if isinstance(run_or_model, Decoder):
        cfg, step = run_or_model.cfg, None
        weights = {k: v.numpy() for k, v in get_state_dict(run_or_model).items()}
    else:
        cfg, weights, step = run_weights(run_or_model)
    sd = {}
    for xt, ours in parameter_names(cfg.depth, cfg.use_next_embed).items():
        w = np.asarray(weights[ours], np.float32)
        if xt.endswith("gamma"):
            w = w - np.float32(1.0)                 # x-transformers stores scale - 1
        elif xt == "pos_emb.emb.weight":
            w = w / np.float32(dim_scale(cfg.dim))  # it scales the table in its forward pass
        sd[xt] = w
    project_out = False
    if cfg.heads == 1:   # x-transformers has no output projection for one head unless asked
        outs = [f"attn_layers.layers.{2 * j}.1.to_out.weight" for j in range(cfg.depth)]
        if all(np.array_equal(sd[o], np.eye(*sd[o].shape, dtype=np.float32)) for o in outs):
            for o in outs:
                del sd[o]                           # the identity: its default (no projection) is exact
        else:
            project_out = True
    return sd, constructor_args(cfg, project_out=project_out, step=step)
