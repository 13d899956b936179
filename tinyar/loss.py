"""The complete autoregressive loss, one function per idea. See ../README.md "The loss".

    total = ce + zloss_weight * zloss + next_embed_weight * next_embed

Every piece follows x-transformers' AutoregressiveWrapper where the definitions agree; the
tests check each against plain numpy loops (tests/oracle.py), forward and backward.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.helpers import TRAINING

from tinyar.data import MASK, PAD


def shift(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher forcing: predict token t+1 from tokens <= t. (B,T+1) int -> inp (B,T), tgt (B,T)

    Any B >= 1 and T >= 1; the ids keep their dtype."""
    # BEGIN TASK shift
    return tokens[:, :-1], tokens[:, 1:]
    # END TASK shift


def num_masked(T: int, p: float) -> int:
    """How many positions per row are masked: floor(T*p), at most T-1 (position 0 stays)."""
    return min(int(T * p), T - 1)


def choose_mask_positions(rng: np.random.Generator, B: int, T: int, p: float) -> np.ndarray:
    """Per row exactly num_masked(T, p) distinct positions, uniform over 1..T-1. -> (B,T) bool

    Returns a numpy bool array (not a Tensor). Position 0 is never chosen: under fcm it is the
    one key every query can always see. Every set of k positions is equally likely, each row
    is drawn independently of the others, and every random number comes from `rng` itself
    (no np.random.*, no copy of rng): the same rng state gives the same mask, and each call
    moves rng on, so the next batch gets new positions."""
    # BEGIN TASK mask_positions
    k = num_masked(T, p)
    mask = np.zeros((B, T), dtype=bool)
    if k > 0:
        chosen = np.argsort(rng.random((B, T - 1)), axis=1)[:, :k] + 1  # (B,k) in 1..T-1
        np.put_along_axis(mask, chosen, True, axis=1)
    return mask
    # END TASK mask_positions


def replace_masked(inp: Tensor, mask: Tensor) -> Tensor:
    """`replace` mode: masked input tokens become MASK. (B,T) int, (B,T) bool -> (B,T) int"""
    # BEGIN TASK replace
    return mask.where(MASK, inp).cast(inp.dtype)
    # END TASK replace


def apply_mask(inp: Tensor, tgt: Tensor, mask: Tensor, mode: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """Mask one batch. (B,T) int, (B,T) int, (B,T) bool -> inp', tgt', hidden_keys (B,T) bool or None

    'replace': the masked *inputs* become MASK and the targets stay, so the model still learns
    the true next token where its own input was hidden. 'fcm': the tokens stay; the masked
    positions come back as `hidden_keys`, which attention hides (model.mask_scores).
    Returns (Tensor, Tensor, hidden_keys): in 'replace' mode hidden_keys is None (no key is
    hidden; an all-False (B,T) mask means the same and is accepted), in 'fcm' mode it is
    `mask` itself, (B,T) bool."""
    if mode not in ("replace", "fcm"):
        raise ValueError(f"mask_mode must be 'replace' or 'fcm', got {mode!r}")
    # BEGIN TASK replace
    if mode == "replace":
        return replace_masked(inp, mask), tgt, None
    return inp, tgt, mask
    # END TASK replace


def cross_entropy(logits: Tensor, tgt: Tensor, valid: Tensor) -> Tensor:
    """Mean of -log softmax(logits)[tgt] over valid positions. (B,T,V), (B,T), (B,T) bool -> () float

    tgt holds PAD where valid is False; at least one position is valid. The gradient reaches
    the logits: (softmax - onehot(tgt)) / n_valid at valid positions, 0 elsewhere.

    logsumexp subtracts the row max first, so 1000x logits don't overflow. (Equal to
    -log_softmax(logits)[tgt]; this form skips writing the (B,T,V) log-probabilities.)"""
    # BEGIN TASK cross_entropy
    logits = logits.float()
    picked = (logits * tgt.one_hot(logits.shape[-1])).sum(-1)              # (B,T) logit of tgt
    nll = logits.logsumexp(-1) - picked                                    # (B,T) = -log p(tgt)
    w = valid.float()
    return (nll * w).sum() / w.sum().maximum(1)
    # END TASK cross_entropy


def attention_zloss(lses: list[Tensor]) -> Tensor:
    """x-transformers' attention z-loss: sum the per-layer log-sum-exp over layers, square,
    sum over heads, mean over batch and positions. depth x (B,H,T) -> () float (depth >= 1)"""
    # BEGIN TASK zloss
    total = lses[0]
    for lse in lses[1:]:
        total = total + lse
    return (total * total).sum(1).mean()
    # END TASK zloss


def next_embed_loss(pred: Tensor, target: Tensor, valid: Tensor, kind: str = "mse") -> Tensor:
    """Mean over valid positions x D dims of (pred-target)^2 ('mse') or |pred-target| ('l1').
    (B,T,D), (B,T,D), (B,T) bool -> () float

    The target (the next token's embedding row) is detached for both kinds: the gradient
    w.r.t. `target` is exactly 0, so the head learns to move toward it and nothing pulls the
    embedding table toward the prediction. The gradient reaches `pred`."""
    # BEGIN TASK next_embed
    err = pred - target.detach()
    err = err * err if kind == "mse" else err.abs()
    w = valid.float()
    return (err.sum(-1) * w).sum() / (w.sum().maximum(1) * pred.shape[-1])
    # END TASK next_embed


def total_loss(ce: Tensor, zloss: Tensor, next_embed: Tensor, zloss_weight: float,
               next_embed_weight: float) -> Tensor:
    """ce + zloss_weight * zloss + next_embed_weight * next_embed. () float Tensors, floats -> ()

    A component whose weight is exactly 0 is left out, so an unused one (maybe nan or inf)
    can't leak into the total (0 * nan is nan). Any other weight, tiny or negative, multiplies
    its component; a nan in a used component shows in the total. The gradient reaches ce,
    zloss and next_embed (d total/d zloss = zloss_weight)."""
    # BEGIN TASK total
    total = ce
    if zloss_weight != 0:
        total = total + zloss_weight * zloss
    if next_embed_weight != 0:
        total = total + next_embed_weight * next_embed
    return total
    # END TASK total


def autoregressive_loss(model, tokens, *, mask_prob: float = 0.0, mask_mode: str = "replace",
                        mask_positions=None, zloss_weight: float = 0.0, next_embed_weight: float = 0.0,
                        next_embed_kind: str = "mse", rng: np.random.Generator | None = None) -> dict[str, Tensor]:
    """Every loss component for a batch of windows. tokens (B,T+1) int -> dict of () Tensors.

    Keys (config.COMPONENTS): `total` (what is trained on), and the raw, unweighted `ce`,
    `zloss`, `next_embed`. `zloss` is always computed (it is cheap and worth watching);
    `next_embed` is computed whenever the model has a next-embed head and is 0 otherwise.

    Masking has one path: positions (B,T) bool -> apply_mask. They are `mask_positions` when
    given (used exactly as given, in or out of training; `mask_prob` is then ignored); else,
    inside `Context(TRAINING=1)` with `mask_prob` > 0, choose_mask_positions(rng, B, T,
    mask_prob) draws them, the same function Trainer.next_batch calls; else nothing is masked
    (evaluation never masks). Trainer draws outside and passes `mask_positions` because its
    step is jitted: a numpy draw inside TinyJit would run once, at capture, and be replayed.
    `mask_mode`: 'replace' puts MASK in the inputs; 'fcm' hides those positions as attention
    keys in every layer and head."""
    tokens = tokens if isinstance(tokens, Tensor) else Tensor(np.asarray(tokens, dtype=np.int32))
    tokens = tokens.cast(dtypes.int32)  # a uint8 batch can't hold MASK/PAD (256 would wrap to 0)
    inp, tgt = shift(tokens)
    B, T = inp.shape
    if mask_positions is None and mask_prob > 0 and TRAINING.value:   # drawn here, then the one path below
        mask_positions = choose_mask_positions(rng or np.random.default_rng(), B, T, mask_prob)
    hidden_keys = None
    if mask_positions is not None:
        if not isinstance(mask_positions, Tensor):
            mask_positions = np.asarray(mask_positions, dtype=bool)
            if mask_mode == "fcm" and mask_positions[:, 0].any():
                raise ValueError("fcm mask_positions hide position 0, leaving query 0 no key to attend to; "
                                 "keep column 0 False")
        mask = mask_positions if isinstance(mask_positions, Tensor) else Tensor(mask_positions, device=tokens.device)
        inp, tgt, hidden_keys = apply_mask(inp, tgt, mask, mask_mode)

    logits, lses, hidden = model(inp, hidden_keys)
    valid = tgt != PAD
    out = {"ce": cross_entropy(logits, tgt, valid), "zloss": attention_zloss(lses)}
    if model.next_embed is not None:
        out["next_embed"] = next_embed_loss(model.next_embed(hidden), model.embed(tgt), valid, next_embed_kind)
    else:
        out["next_embed"] = Tensor.zeros((), dtype=dtypes.float32, device=tokens.device)
    if next_embed_weight > 0 and model.next_embed is None:
        raise ValueError("next_embed_weight > 0 needs a model built with a next-embed head")
    total = total_loss(out["ce"], out["zloss"], out["next_embed"], zloss_weight, next_embed_weight)
    return {"total": total, **out}
