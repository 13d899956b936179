"""Leaving tinyar for PyTorch: what x-transformers needs to continue a run, and what it computes
differently. `tinyar.interop.to_x_transformers` uses `constructor_args`; `python cli.py export`
writes the result with `write_export`:

    OUT/model.safetensors   the weights in x-transformers' names (float32; the arguments below
                            also ride in its metadata, so the file alone is enough)
    OUT/model.json          the exact keyword arguments, the optimizer settings, the notes

    net = TransformerWrapper(**a["TransformerWrapper"], attn_layers=Decoder(**a["Decoder"]))
    net.load_state_dict(safetensors.torch.load_file("OUT/model.safetensors"))   # strict
    model = AutoregressiveWrapper(net, **a["AutoregressiveWrapper"])
    loss = model(windows_of_seq_len_tokens, **a["forward"])

Writing needs no torch: a safetensors file is a JSON header and raw little-endian arrays.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tinyar.config import Config
from tinyar.data import MASK, PAD

WEIGHTS, ARGS, MOMENTS = "model.safetensors", "model.json", "optimizer.safetensors"
FORMAT = "tinyar export for x-transformers 1"
BETAS, EPS = (0.9, 0.95), 1e-8   # tinyar.train's AdamW


class ExportError(ValueError):
    """A run can't be exported (or an export can't be read back). The message says why and what to do."""


def constructor_args(cfg: Config, project_out: bool = False, step: int | None = None) -> dict:
    """Everything x-transformers needs to rebuild and keep training this model. -> JSON-able dict

    project_out: a one-head model whose output projection is not the identity needs
    `attn_project_out=True` (x-transformers leaves a single head's projection out by default)."""
    decoder = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "attn_dim_head": cfg.head_dim}
    if project_out:
        decoder["attn_project_out"] = True
    fcm = cfg.mask_mode == "fcm"
    return {
        "format": FORMAT,
        "TransformerWrapper": {"num_tokens": cfg.vocab, "max_seq_len": cfg.seq_len,
                               "add_continuous_pred_head": cfg.use_next_embed},
        "Decoder": decoder,
        # PAD is ignore_index and pad_value both: targets == PAD are ignored, inputs stay PAD
        "AutoregressiveWrapper": {"ignore_index": PAD, "pad_value": PAD, "mask_prob": cfg.mask_prob if fcm else 0.0,
                                  "add_attn_z_loss": cfg.zloss_weight > 0,
                                  "next_embed_loss_weight": cfg.next_embed_weight},
        # keywords of the wrapper's forward (passed on to the net)
        "forward": {"attn_z_loss_weight": cfg.zloss_weight} if cfg.zloss_weight > 0 else {},
        "window": cfg.seq_len,   # tokens per sequence given to the wrapper (max_seq_len)
        "tokens": {"bytes": [0, 255], "MASK": MASK, "PAD": PAD},
        "optimizer": {"AdamW": {"lr": cfg.lr, "betas": list(BETAS), "eps": EPS, "weight_decay": cfg.weight_decay},
                      "no_weight_decay": "1-d parameters (LayerNorm gammas, biases)",
                      "schedule": {"warmup": cfg.warmup, "steps": cfg.steps, "min_lr_ratio": cfg.min_lr_ratio,
                                   "shape": "linear warmup, then cosine to lr * min_lr_ratio"},
                      "grad_clip": cfg.grad_clip, "batch_size": cfg.batch_size},
        "step": step,
        "notes": notes(cfg),
        "tinyar": cfg.to_dict(),
    }


def notes(cfg: Config) -> list[str]:
    """What x-transformers, built with constructor_args(cfg), computes differently from this run's
    tinyar loss (see the README's parity section). The model itself is the same function."""
    T = cfg.seq_len
    out = [f"windows: the wrapper runs the net on every token it is given and predicts all but the last, so "
           f"give it {T}-token windows: {T - 1} targets each (tinyar's {T + 1}-token windows have {T}); its "
           f"z-loss averages over all {T} positions (tinyar's over its {T} inputs: the same formula)"]
    if cfg.mask_prob > 0 and cfg.mask_mode == "replace":
        out.append(f"masking: tinyar's replace mode (--mlm {cfg.mask_prob:g}: masked inputs become MASK={MASK}) has "
                   f"no x-transformers counterpart; exported with mask_prob=0 (no masking). mask_prob={cfg.mask_prob:g} "
                   f"would train forgetful causal masking instead (hidden keys, tinyar's --mlm-mode fcm)")
    if cfg.next_embed_weight > 0:
        what = ("differs from tinyar's L1 only by the position row in the target" if cfg.next_embed_kind == "l1" else
                "is a different loss from this run's MSE against the token row alone")
        out.append("next-embed: x-transformers' loss is L1 against the next position's input embedding (token row "
                   f"+ position row) and {what}; the head's weights are exact, the loss that trains them from here "
                   "differs")
    if cfg.dtype != "float32":
        out.append(f"precision: trained with {cfg.dtype} matmuls; the weights are float32 (torch.autocast is "
                   f"PyTorch's counterpart)")
    out.append(f"position table: x-transformers stores it dim**0.5 = {cfg.dim ** 0.5:.3g} times larger and scales it "
               f"down in the forward pass, so the same Adam step moves it {cfg.dim ** 0.5:.3g} times less than in tinyar "
               f"(its moments are converted exactly)")
    return out


def run_weights(run: str | Path, moments: bool = False) -> tuple[Config, dict[str, np.ndarray], int]:
    """The model weights (tinyar names), config and step of a run folder's newest checkpoint, or
    of a checkpoint file. Reads numpy only: no device, no compile. With `moments`, the weights
    dict holds AdamW's moments instead, as "m.<name>" and "v.<name>"."""
    from tinyar import checkpoint as ckpt
    run = Path(run)
    if run.is_dir():
        path = ckpt.latest(run)
        if path is None:
            raise ExportError(f"no checkpoint (ckpt-*.safetensors) in {run}; train it first, or pass the run "
                              f"folder that holds one")
    elif run.is_file():
        path = run
    else:
        raise ExportError(f"run folder {run} does not exist; pass the --out folder of a `python cli.py train` run")
    try:
        cfg, arrays, meta = ckpt.load(path)
    except ckpt.CheckpointError as e:
        raise ExportError(str(e)) from None
    weights = {k.removeprefix("model."): a for k, a in arrays.items() if k.startswith("model.")}
    if moments:   # tinyar.train: AdamW 0 holds the matrices, AdamW 1 the vectors, each in model order
        groups = ([k for k, a in weights.items() if a.ndim >= 2], [k for k, a in weights.items() if a.ndim < 2])
        try:
            weights = {f"{mv}.{name}": arrays[f"optim.optimizers.{g}.{mv}.{i}"]
                       for g, names in enumerate(groups) for i, name in enumerate(names) for mv in "mv"}
        except KeyError as e:
            raise ExportError(f"{path} has no AdamW moment {e.args[0]}; was it written by another tinyar?") from None
    return cfg, weights, int(meta["step"])


def adam_moments(run: str | Path) -> dict[str, np.ndarray]:
    """The run's AdamW moments in x-transformers' names, as torch.optim.AdamW keeps them:
    "exp_avg.<name>", "exp_avg_sq.<name>" (tinygrad's m and v: the same update rule). A gamma's
    gradient is the weight's; the position table's is tinyar's / dim**0.5 (it is stored
    dim**0.5 times larger), so its m scales by dim**-0.5 and its v by 1/dim."""
    from tinyar.interop import dim_scale, parameter_names
    cfg, mv, _ = run_weights(run, moments=True)
    out = {}
    for xt, ours in parameter_names(cfg.depth, cfg.use_next_embed).items():
        k = dim_scale(cfg.dim) if xt == "pos_emb.emb.weight" else 1.0
        out[f"exp_avg.{xt}"] = mv[f"m.{ours}"] * np.float32(k)
        out[f"exp_avg_sq.{xt}"] = mv[f"v.{ours}"] * np.float32(k * k)
    return out


def write_export(out: Path, state: dict[str, np.ndarray], args: dict, force: bool = False,
                 moments: dict[str, np.ndarray] | None = None) -> list[Path]:
    """OUT/model.safetensors and OUT/model.json (and OUT/optimizer.safetensors: `moments`), each
    written to a temp file and renamed. An existing OUT is refused unless `force` (which replaces
    only these files). -> the paths"""
    from tinyar.checkpoint import write_atomic
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; OUT is a folder for {WEIGHTS} and {ARGS}: pick another name")
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to overwrite its {WEIGHTS}, {ARGS} and "
                          f"{MOMENTS}, or pick another OUT")
    text = json.dumps(args, indent=2) + "\n"
    weights, meta = out / WEIGHTS, out / ARGS
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(weights, {k: np.asarray(v, np.float32) for k, v in state.items()},
                     {"format": "pt", "x_transformers": json.dumps(args)})
        if moments is not None:
            write_atomic(out / MOMENTS, moments, {"format": "pt", "step": str(args["step"])})
        tmp = meta.with_name(f".{ARGS}.tmp{os.getpid()}")
        try:
            tmp.write_text(text)
            os.replace(tmp, meta)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        raise ExportError(f"cannot write into {out}: {e.strerror or e}; pick another OUT") from None
    return [weights, meta] + ([out / MOMENTS] if moments is not None else [])
