"""One frozen dataclass holds every setting. OPTIONS, below it, is the one table of command-line
options: each mirrors one field (`--zloss` <-> zloss_weight); cli.py builds its options from it
and error messages name fields by it. The fields in NO_FLAG have no option, for the reason given."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

MASK_MODES = ("replace", "fcm")
NEXT_EMBED_KINDS = ("mse", "l1")
DTYPES = ("float32", "float16", "bfloat16")
# --dtype float16: the loss is scaled by this for the backward and the gradients scaled back in
# float32 (small gradients, the z-loss's at weight 1e-4, flushed to 0 in half matmuls otherwise)
FP16_LOSS_SCALE = 4096.0
PIECES = ("ce", "zloss", "next_embed")   # the loss's raw components (tinyar/loss.py)
COMPONENTS = ("total", *PIECES)          # what autoregressive_loss returns; every training row logs them


class ConfigError(ValueError):
    """A setting is out of range. The message says which one and how to fix it."""


@dataclass(frozen=True)
class Config:
    # model
    dim: int = 128                # width of the residual stream
    depth: int = 4                # number of transformer blocks
    heads: int = 4                # attention heads; head width is dim_head
    dim_head: int = 0             # 0 = dim // heads (x-transformers' own default is 64)
    seq_len: int = 128            # tokens per training window (T)
    vocab: int = 258              # 256 bytes + MASK + PAD
    next_embed_head: bool = False # build the next-embed head even if its weight is 0
    # loss (see tinyar/loss.py for the exact definitions)
    mask_prob: float = 0.0        # --mlm: fraction of input positions masked in training
    mask_mode: str = "replace"    # --mlm-mode: 'replace' (MASK token) or 'fcm' (hide as keys)
    zloss_weight: float = 0.0     # --zloss: weight of the attention z-loss
    next_embed_weight: float = 0.0  # --next-embed: weight of the next-embed loss
    next_embed_kind: str = "mse"  # --next-embed-loss: 'mse' or 'l1' (x-transformers' choice)
    # optimisation
    steps: int = 300              # optimizer steps
    batch_size: int = 16          # windows per step (B)
    lr: float = 3e-3              # peak learning rate (AdamW)
    min_lr_ratio: float = 0.1     # cosine decays to lr * min_lr_ratio
    warmup: int = 30              # linear warmup steps
    weight_decay: float = 0.1     # decoupled, on matrices only
    grad_clip: float = 1.0        # clip the global gradient norm to this (0 = off)
    dtype: str = "float32"        # matmul precision; weights, norms, softmax and losses stay float32
    # bookkeeping
    eval_every: int = 100         # validation every N steps (and at the end)
    eval_batches: int = 4         # validation batches per evaluation
    log_every: int = 10           # one table row every N steps
    grad_share: bool = False      # at each log step, each loss component's gradient norm, share and
                                  # cosine with CE, and attention lse stats (tinyar/gradshare.py; a
                                  # second jitted pass on the step's batch, so off costs nothing)
    save_every: int = 100         # checkpoint every N steps (and at the end)
    seed: int = 0                 # same seed + same device -> same losses

    @property
    def head_dim(self) -> int:
        return self.dim_head or self.dim // self.heads

    @property
    def use_next_embed(self) -> bool:
        return self.next_embed_head or self.next_embed_weight > 0

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Raise ConfigError with a one-line fix for the first bad setting; return self."""
        positive = ("dim", "depth", "heads", "seq_len", "steps", "batch_size",
                    "eval_every", "eval_batches", "log_every", "save_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)} must be at least 1 (got {getattr(self, name)})")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{flag(f.name)} must be a finite number (got {value})")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0 (got {self.seed})")
        if self.seq_len < 2:
            raise ConfigError(f"--seq-len must be at least 2 (got {self.seq_len})")
        if self.dim_head < 0:
            raise ConfigError(f"{flag('dim_head')} must be >= 0 (got {self.dim_head}); 0 means dim // heads")
        if not self.dim_head and self.dim % self.heads:
            raise ConfigError(f"--heads {self.heads} does not divide --dim {self.dim}; give --dim-head, or "
                              f"pick heads from {[h for h in range(1, self.dim + 1) if self.dim % h == 0][:8]}")
        if not 0.0 <= self.mask_prob < 1.0:
            raise ConfigError(f"--mlm must be in [0, 1) (got {self.mask_prob}); e.g. --mlm 0.15")
        if self.mask_mode not in MASK_MODES:
            raise ConfigError(f"--mlm-mode must be one of {', '.join(MASK_MODES)} (got {self.mask_mode!r})")
        if self.next_embed_kind not in NEXT_EMBED_KINDS:
            raise ConfigError(f"--next-embed-loss must be one of {', '.join(NEXT_EMBED_KINDS)} "
                              f"(got {self.next_embed_kind!r})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        for name in ("zloss_weight", "next_embed_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)} is a loss weight and must be >= 0 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0 (got {self.lr})")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0 (got {self.warmup})")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ConfigError("--grad-clip and --weight-decay must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{flag('min_lr_ratio')} must be in [0, 1] (got {self.min_lr_ratio})")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown config fields {sorted(unknown)}: was this written by a newer tinyar?")
        for f in dataclasses.fields(cls):
            if f.name in d and not _fits(d[f.name], type(f.default)):
                raise ConfigError(f"config field {f.name} is {d[f.name]!r} ({type(d[f.name]).__name__}), "
                                  f"not {type(f.default).__name__}")
        return cls(**d)


def _fits(value, kind: type) -> bool:
    """A saved value of the field's type (an int where a float goes; a bool is not an int)."""
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return type(value) is kind


# Config field -> (command-line option, help); the options of `train` and `bench`, in --help's order
OPTIONS = {
    "mask_prob": ("--mlm", "fraction of input positions masked during training, in [0, 1)"),
    "mask_mode": ("--mlm-mode", "replace: MASK token; fcm: hide as attention keys"),
    "zloss_weight": ("--zloss", "weight of the attention z-loss; 0 = watched, not trained (the z-loss* "
                     "column). Raw, it starts near 1,000 for the default shape and grows as attention "
                     "sharpens; 1e-4 makes it ~0.1 of the total"),
    "next_embed_weight": ("--next-embed", "weight of the next-embed loss (adds the head)"),
    "next_embed_kind": ("--next-embed-loss", "next-embed distance"),
    "steps": ("--steps", "optimizer steps"),
    "batch_size": ("--batch-size", "windows per step"),
    "seq_len": ("--seq-len", "tokens per window"),
    "dim": ("--dim", "model width"),
    "depth": ("--depth", "transformer blocks"),
    "heads": ("--heads", "attention heads (must divide --dim, unless --dim-head is given)"),
    "dim_head": ("--dim-head", "width of each attention head (0 = dim // heads)"),
    "lr": ("--lr", "peak learning rate"),
    "min_lr_ratio": ("--min-lr-ratio", "the cosine schedule ends at lr × this"),
    "warmup": ("--warmup", "linear warmup steps"),
    "grad_clip": ("--grad-clip", "global gradient-norm clip (0 = off)"),
    "weight_decay": ("--weight-decay", "AdamW decay on matrices"),
    "eval_every": ("--eval-every", "validation every N steps"),
    "eval_batches": ("--eval-batches", "validation batches per evaluation (each batch-size × seq-len bytes)"),
    "log_every": ("--log-every", "one table row every N steps"),
    "save_every": ("--save-every", "checkpoint every N steps"),
    "seed": ("--seed", "same seed + same device -> same losses"),
    "dtype": ("--dtype", "matmul precision; weights, norms, softmax and losses stay float32"),
    "grad_share": ("--grad-share", "at each log step, each loss component's gradient norm, its share of the "
                   "total gradient and its cosine with ce's, and attention lse stats (a second jitted pass on "
                   "the step's batch; tinyar/gradshare.py)"),
}
CHOICES = {"mask_mode": MASK_MODES, "next_embed_kind": NEXT_EMBED_KINDS, "dtype": DTYPES}
# the fields without an option, and why (set them in Python: Config(...).replace(...))
NO_FLAG = {
    "vocab": "fixed by the byte tokens (256 bytes + MASK + PAD)",
    "next_embed_head": "the head with its loss off (interop); --next-embed > 0 builds it anyway",
}
# options `bench` leaves out: it times single steps, it runs no schedule, validation or checkpoints
TRAIN_ONLY = ("steps", "min_lr_ratio", "warmup", "eval_every", "eval_batches", "log_every", "save_every",
              "grad_share")


def flag(field: str) -> str:
    """How messages name a Config field: its option (--mlm for mask_prob), else the field itself."""
    return OPTIONS[field][0] if field in OPTIONS else field
