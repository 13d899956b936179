"""x-transformers checkpoints on disk, both ways: read one to start a tinyar run from it
(`train --init-from`), and build the PyTorch module an export describes (`export --verify`).

What a PyTorch user has, and what is read:
    OUT/ or OUT/model.safetensors   `python cli.py export` (or tinyar/ddp_continue.py) wrote it:
                                    the arguments, heads included, ride along
    any .safetensors                `safetensors.torch.save_file(net.state_dict(), path)`; give --heads
    .pt / .pth / .bin               `torch.save(net.state_dict(), path)`: read with
                                    torch.load(weights_only=True) (tensors only, never arbitrary
                                    pickled objects); needs torch
Keys may carry the prefixes `net.` (AutoregressiveWrapper), `module.` (DDP) or `_orig_mod.`
(torch.compile).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyar.export import WEIGHTS, ExportError

TORCH_HINT = "pip install -e '.[parity]' (torch and x-transformers)"


def require_torch(why: str):
    """-> (torch, x_transformers), or ExportError naming the extra to install."""
    try:
        import torch
        import x_transformers
    except ImportError as e:
        raise ExportError(f"{why} needs PyTorch and x-transformers ({e.msg}): {TORCH_HINT}") from None
    return torch, x_transformers


def _strip(state: dict) -> dict:
    for prefix in ("module.", "_orig_mod.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def read_x_transformers(path: str | Path) -> tuple[dict[str, np.ndarray], dict | None]:
    """An x-transformers state dict from a file (or an export folder). -> (arrays, export arguments or None)"""
    from tinyar.checkpoint import parse_safetensors
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise ExportError(f"{path} does not exist; pass an export folder, a .safetensors file or a torch.save'd "
                          f"state dict (.pt)")
    args = None
    if path.suffix in (".pt", ".pth", ".bin"):
        torch, _ = require_torch(f"reading {path.name} (a torch.save file)")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many kinds; say it in one line
            raise ExportError(f"cannot read {path} with torch.load(weights_only=True): {str(e).splitlines()[0]}; "
                              f"save the model's state_dict() (tensors only)") from None
        if not isinstance(obj, dict) or not all(hasattr(v, "numpy") for v in obj.values()):
            raise ExportError(f"{path} holds no state dict of tensors; save net.state_dict() with torch.save")
        state = {k: v.detach().float().cpu().numpy() for k, v in obj.items()}
    elif path.suffix == ".safetensors":
        try:
            state, tags = parse_safetensors(path.read_bytes())
        except (OSError, ValueError) as e:
            raise ExportError(f"cannot read {path} as safetensors ({e}); is it truncated?") from None
        if "x_transformers" in tags:
            args = json.loads(tags["x_transformers"])
        elif (path.with_suffix(".json")).is_file():
            args = json.loads(path.with_suffix(".json").read_text())
    else:
        raise ExportError(f"{path}: expected a .safetensors file (or .pt from torch.save); convert with "
                          f"safetensors.torch.save_file(net.state_dict(), 'model.safetensors')")
    return _strip(state), args


def build_x_transformers(args: dict, state: dict[str, np.ndarray], dtype: str = "float32"):
    """The TransformerWrapper that `args` describes, with `state` loaded strictly (every name and
    shape must match: this is the check that the arguments are exact). -> torch module (eval mode)"""
    torch, xt = require_torch("building the x-transformers model")
    net = xt.TransformerWrapper(**args["TransformerWrapper"], attn_layers=xt.Decoder(**args["Decoder"]))
    net.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return net.to(getattr(torch, dtype)).eval()


def compare_logits(run: str | Path, args: dict, state: dict[str, np.ndarray], seed: int = 0) -> float:
    """Relative difference of x-transformers' logits (float64, the exported `state`) and tinyar's
    (the run's own checkpoint) on one random (1, seq_len) batch of bytes: max|a-b| / max|b|."""
    import torch
    from tinygrad import Tensor
    from tinygrad.nn.state import load_state_dict

    from tinyar.export import run_weights
    from tinyar.model import Decoder
    cfg, weights, _ = run_weights(run)
    model = Decoder(cfg)
    load_state_dict(model, {k: Tensor(np.asarray(v, np.float32)) for k, v in weights.items()}, verbose=False)
    net = build_x_transformers(args, state, "float64")
    tokens = np.random.default_rng(seed).integers(0, 256, (1, cfg.seq_len)).astype(np.int32)
    ours = model(Tensor(tokens))[0].numpy()
    with torch.no_grad():
        ref = net(torch.from_numpy(tokens.astype(np.int64))).numpy()
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def init_model(path: str | Path, heads: int | None) -> tuple[object, dict | None]:
    """A tinyar Decoder with the weights of an x-transformers checkpoint (from_x_transformers'
    refusals included). heads: given on the command line, else read from the export's arguments.
    -> (model, export arguments or None)"""
    from tinyar.interop import from_x_transformers
    state, args = read_x_transformers(path)
    from tinyar.data import VOCAB
    saved = (args or {}).get("Decoder", {}).get("heads")
    if heads is None and saved is None:
        raise ExportError(f"{path} does not say how many attention heads the model has; pass --heads N "
                          f"(x-transformers' Decoder(heads=N))")
    if heads is not None and saved is not None and heads != saved:
        raise ExportError(f"--heads {heads} differs from the {saved} heads {path} was exported with; drop --heads")
    try:
        model = from_x_transformers(state, heads if heads is not None else saved)
    except ValueError as e:
        raise ExportError(f"{path}: {e}") from None
    if model.cfg.vocab != VOCAB:
        raise ExportError(f"{path} has a vocabulary of {model.cfg.vocab} tokens; tinyar's tokens are bytes + MASK + "
                          f"PAD ({VOCAB}), so only an x-transformers model with num_tokens={VOCAB} can start a run")
    return model, args


def init_fields(model_cfg, given: dict) -> dict:
    """The Config fields of a fresh run from x-transformers weights: the model's shape (which the
    weights fix) and its next-embed head, everything else as given. Raises ExportError for a shape
    option that disagrees."""
    from tinyar.config import flag
    shape = {k: getattr(model_cfg, k) for k in ("dim", "depth", "heads", "dim_head", "seq_len", "vocab")}
    for k, v in given.items():
        if k in shape and v != shape[k]:
            raise ExportError(f"{flag(k)} {v} differs from the --init-from model's {shape[k]}: the weights fix the "
                              f"model shape; drop {flag(k)}")
    return given | shape | {"next_embed_head": model_cfg.next_embed_head or given.get("next_embed_head", False)}


def init_weights(trainer, model) -> list[str]:
    """Copy the model's weights into a fresh Trainer's (on its devices). -> the names the model
    lacked, left at their initial values (the next-embed head, when --next-embed adds one)"""
    from tinygrad.nn.state import get_state_dict
    ours = get_state_dict(model)
    for name, t in get_state_dict(trainer.model).items():
        if name in ours:
            t.assign(trainer.put(ours[name].numpy(), split=False)).realize()
    return sorted(set(get_state_dict(trainer.model)) - set(ours))
