"""The gradient-share instrument: what each loss component does to the update.

    total = ce + zloss_weight * zloss + next_embed_weight * next_embed

so the gradient of the total w.r.t. all the weights (one long vector g) is the sum of one
gradient per weighted component, g = g_ce + g_zloss + g_next_embed. On one batch this measures

    gnorm_c  = |g_c|                          how hard component c pushes the weights
    share_c  = <g_c, g> / |g|^2               its part of the total's length, measured along the
                                              total's direction: the shares of the components that
                                              are on add up to exactly 1, and one pulling against
                                              the rest gets a negative share
    cos_c    = <g_ce, g_c> / (|g_ce| |g_c|)   whether auxiliary component c pulls with the
                                              cross-entropy (> 0), across it (0) or against it (< 0)

and, per attention layer l, the mean and the max of lse_l (B,H,T), the log-sum-exp the z-loss
squares: lse_mean_l0, lse_max_l0, ..., and over all layers lse_mean, lse_max.

A component whose weight is 0 is off: it has no gnorm/share/cos keys. Everything runs in its own
TinyJit, apart from the training step, so a run without --grad-share is as fast as before, and
`Tensor.gradient` returns the gradients without touching any weight's `.grad`.
"""
from __future__ import annotations

from tinygrad import Tensor, TinyJit

from tinyar.config import FP16_LOSS_SCALE, PIECES, Config
from tinyar.loss import autoregressive_loss


def weighted_components(out: dict[str, Tensor], cfg: Config) -> dict[str, Tensor]:
    """The terms of the total that are on, each with its weight. -> {"ce": (), "zloss": (), ...}"""
    weight = {"ce": 1.0, "zloss": cfg.zloss_weight, "next_embed": cfg.next_embed_weight}
    return {c: out[c] * weight[c] if c != "ce" else out[c] for c in PIECES if weight[c] > 0}


def sum_of(scalars: list[Tensor], fan_in: int = 16) -> Tensor:
    """The sum of many stored () Tensors, fan_in at a time. Summed at once, tinygrad made one kernel
    with a buffer argument per term: over 63 (the CPU backend's limit) for a model with many
    parameters, and PoCL failed to link it."""
    while len(scalars) > 1:
        scalars = [Tensor.stack(*scalars[i:i + fan_in]).sum().contiguous() for i in range(0, len(scalars), fan_in)]
    return scalars[0]


def share_stats(grads: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    """Norms, shares and cosines from one gradient list per component (every list in the same
    parameter order; "ce" must be there). -> {"gnorm_total", "gnorm_c", "share_c", "cos_c", ...} of () Tensors

    Everything comes from the Gram matrix G[a,b] = <g_a, g_b>: |g_a|^2 = G[a,a], and since
    g = sum_b g_b, <g_a, g> = sum_b G[a,b] and |g|^2 = sum_ab G[a,b]."""
    names = list(grads)
    dot = lambda a, b: sum_of([(x.float() * y.float()).sum().contiguous() for x, y in zip(grads[a], grads[b])])
    gram = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            gram[a, b] = gram[b, a] = dot(a, b)
    along = {a: Tensor.stack(*[gram[a, b] for b in names]).sum() for a in names}   # <g_a, g>
    total_sq = Tensor.stack(*along.values()).sum()
    tiny = 1e-30   # a zero gradient gives share/cos 0 instead of nan
    out = {"gnorm_total": total_sq.sqrt()}
    for a in names:
        out[f"gnorm_{a}"] = gram[a, a].sqrt()
        out[f"share_{a}"] = along[a] / total_sq.maximum(tiny)
    for a in names:
        if a != "ce":
            out[f"cos_{a}"] = gram["ce", a] / (gram["ce", "ce"] * gram[a, a]).sqrt().maximum(tiny)
    return out


def lse_stats(lses: list[Tensor]) -> dict[str, Tensor]:
    """Mean and max of each layer's attention log-sum-exp, and over all layers.
    depth x (B,H,T) -> {"lse_mean", "lse_max", "lse_mean_l0", "lse_max_l0", ...} of () Tensors"""
    out = {}
    for l, lse in enumerate(lses):
        out[f"lse_mean_l{l}"], out[f"lse_max_l{l}"] = lse.float().mean(), lse.float().max()
    out["lse_mean"] = Tensor.stack(*[out[f"lse_mean_l{l}"] for l in range(len(lses))]).mean()
    out["lse_max"] = Tensor.stack(*[out[f"lse_max_l{l}"] for l in range(len(lses))]).max()
    return out


class _KeepLses:
    """Stands in for the model inside autoregressive_loss and keeps the per-layer lse it returns."""

    def __init__(self, model):
        self.model, self.next_embed, self.lses = model, model.next_embed, []

    def embed(self, ids: Tensor) -> Tensor:
        return self.model.embed(ids)

    def __call__(self, inp: Tensor, hidden_keys: Tensor | None = None):
        logits, self.lses, hidden = self.model(inp, hidden_keys)
        return logits, self.lses, hidden


def measure(model, params: list[Tensor], cfg: Config, tokens: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
    """Every statistic above for one (B,T+1) batch and its (B,T) bool mask (None: unmasked),
    the loss settings taken from cfg. -> dict of () Tensors, unrealized"""
    keep = _KeepLses(model)
    out = autoregressive_loss(keep, tokens, mask_positions=mask, mask_mode=cfg.mask_mode,
                              zloss_weight=cfg.zloss_weight, next_embed_weight=cfg.next_embed_weight,
                              next_embed_kind=cfg.next_embed_kind)
    scale = FP16_LOSS_SCALE if cfg.dtype == "float16" else 1.0
    grads = {c: [(g / scale).contiguous() for g in (term * scale).gradient(*params)]   # one backward per component
             for c, term in weighted_components(out, cfg).items()}
    return share_stats(grads) | lse_stats(keep.lses)


class GradShare:
    """`measure` as one jitted computation for a training run: call it with the batch and mask a
    step is about to train on (before the step, so it sees the weights that step's gradient was
    taken at: its gnorm_total is that step's grad_norm). -> dict of floats"""

    def __init__(self, model, params: list[Tensor], cfg: Config):
        self.model, self.params, self.cfg = model, params, cfg
        self._jit = TinyJit(self._measure)

    def _measure(self, tokens: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        stats = measure(self.model, self.params, self.cfg, tokens, mask)
        Tensor.realize(*stats.values())
        return stats

    def __call__(self, tokens: Tensor, mask: Tensor | None) -> dict[str, float]:
        return {k: v.item() for k, v in self._jit(tokens, mask).items()}
