"""Training: AdamW, warmup + cosine learning rate, global-norm clipping, one jitted step.

`Trainer` owns the model, the optimizer, the data RNG and the step counter (everything a
checkpoint must hold to resume exactly). `train()` is the loop, top to bottom.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterator

import numpy as np
from tinygrad import Device, Tensor, TinyJit
from tinygrad.helpers import Context
from tinygrad.nn.optim import AdamW, OptimizerGroup
from tinygrad.nn.state import get_parameters, get_state_dict

from tinyar import buffer_reuse, tuning
from tinyar.config import FP16_LOSS_SCALE, PIECES, Config
from tinyar.data import Corpus
from tinyar.gradshare import GradShare
from tinyar.loss import autoregressive_loss, choose_mask_positions
from tinyar.model import Decoder

CHECKED = (*PIECES, "total", "grad_norm")   # for NaN/inf, in this order: the raw pieces first, then their total


class Diverged(RuntimeError):
    """A loss component, the gradient norm or a weight became NaN or inf. The weights are spoiled
    by then, so nothing after the last checkpoint may be saved."""

    def __init__(self, step: int, component: str, value: float, row: dict | None = None):
        self.step, self.component, self.row = step, component, row
        super().__init__(f"training diverged at step {step}: {component} is {value}")


def first_non_finite(row: dict) -> str | None:
    """The component to blame: the raw pieces first, then their total, then the gradient norm."""
    for name in CHECKED:
        if not math.isfinite(row[name]):
            return name
    return None


def lr_at(step: int, cfg: Config) -> float:
    """Linear warmup to cfg.lr over cfg.warmup steps, then cosine down to lr * min_lr_ratio.
    step counts from 0 -> a float

    Warmup: step s < warmup gives lr (s+1)/warmup (the first step already moves). Then the
    cosine runs over the remaining steps - warmup steps (at least 1) from lr to the floor
    lr * min_lr_ratio, and stays at the floor after cfg.steps. warmup 0: no warmup."""
    # BEGIN TASK schedule
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))
    # END TASK schedule


def clip_grad_norm_(params: list[Tensor], max_norm: float) -> Tensor:
    """Scale every gradient so their global L2 norm is at most max_norm; return the norm before.
    params: Tensors whose .grad is set -> () float Tensor

    The norm is over all gradients together (not per parameter). Each p.grad is replaced by
    p.grad * min(1, max_norm / (norm + 1e-6)): never scaled up. max_norm 0: no clipping."""
    # BEGIN TASK clip
    for p in params:   # stored once: else the norm and every update kernel recompute them
        p.grad = p.grad.contiguous()
    norm = Tensor.stack(*[p.grad.float().square().sum() for p in params]).sum().sqrt().contiguous()
    if max_norm > 0:
        scale = (max_norm / (norm + 1e-6)).minimum(1.0)
        for p in params:
            p.grad = p.grad * scale.cast(p.grad.dtype)
    return norm
    # END TASK clip


class Trainer:
    """devices: None for tinygrad's default device, or a tuple of devices of one kind to train
    data-parallel: weights replicated on each, the batch split along B, gradients all-reduced
    by tinygrad's sharding (same losses as one device with the same global batch)."""

    def __init__(self, cfg: Config, devices: tuple[str, ...] | None = None):
        self.cfg, self.devices = cfg, devices
        # kernel schedules tuned once for this device and shape, if a table has them, and buffer
        # reuse where tinygrad plans no memory (OpenCL): README "Speed"
        tuning.enable(devices[0] if devices else Device.DEFAULT)
        buffer_reuse.install()
        Tensor.manual_seed(cfg.seed)
        self.model = Decoder(cfg)
        if devices:
            if cfg.batch_size % len(devices):
                raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the {len(devices)} devices")
            for t in get_state_dict(self.model).values():
                t.to_(devices)   # replicate before the optimizer creates its moments
        params = get_parameters(self.model)
        matrices = [p for p in params if p.ndim >= 2]   # decay weights and embeddings,
        vectors = [p for p in params if p.ndim < 2]     # not norm scales and biases
        self.opt = OptimizerGroup(AdamW(matrices, lr=cfg.lr, b1=0.9, b2=0.95, weight_decay=cfg.weight_decay),
                                  AdamW(vectors, lr=cfg.lr, b1=0.9, b2=0.95, weight_decay=0.0))
        # moments stored now: the JIT's capture step then builds the same graph as step 0 and
        # reuses its schedule (lazy zeros made the capture re-plan every kernel: +60 s)
        Tensor.realize(*get_parameters(self.opt))
        self.params = params
        self.rng = np.random.default_rng(cfg.seed)  # draws windows and mask positions
        self.step = 0
        self._jit_step = TinyJit(self._step)
        self._jit_eval = TinyJit(self._eval)
        self.grad_share = GradShare(self.model, params, cfg) if cfg.grad_share else None

    def loss_kwargs(self) -> dict:
        c = self.cfg
        return dict(mask_mode=c.mask_mode, zloss_weight=c.zloss_weight,
                    next_embed_weight=c.next_embed_weight, next_embed_kind=c.next_embed_kind)

    def _step(self, tokens: Tensor, mask: Tensor | None, lr: Tensor) -> dict[str, Tensor]:
        with Context(TRAINING=1):
            for opt in self.opt.optimizers:
                opt.lr.assign(lr)
            self.opt.zero_grad()
            out = autoregressive_loss(self.model, tokens, mask_positions=mask, **self.loss_kwargs())
            if self.cfg.dtype == "float16":
                # static loss scaling: small gradients (the z-loss's, weighted 1e-4) fall below
                # float16's smallest number in the half-precision matmul backwards and become 0
                # (seen on PoCL: the z-loss did not move). Scale up, then back down in float32.
                (out["total"] * FP16_LOSS_SCALE).backward()
                for p in self.params:
                    p.grad = p.grad / FP16_LOSS_SCALE
            else:
                out["total"].backward()
            out["grad_norm"] = clip_grad_norm_(self.params, self.cfg.grad_clip)
            # one realize: the losses are computed before the update overwrites the weights
            # (realized after opt.step(), they were the losses of the *updated* weights)
            Tensor.realize(*out.values(), *self.opt.schedule_step())
        return out

    def _eval(self, tokens: Tensor) -> Tensor:
        return autoregressive_loss(self.model, tokens, **self.loss_kwargs())["ce"]

    def put(self, a: np.ndarray, split: bool = True) -> Tensor:
        """numpy -> Tensor on the training device(s); with several, split along axis 0 (or copy)."""
        if self.devices:
            return Tensor(a).shard(self.devices, axis=0 if split else None)
        return Tensor(a, device=self.params[0].device)

    def train_step(self, batch: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
        """One optimizer step on a (B,T+1) batch; mask is (B,T) bool or None. -> floats"""
        lr = lr_at(self.step, self.cfg)
        out = self._jit_step(self.put(batch), None if mask is None else self.put(mask),
                             self.put(np.array([lr], dtype=np.float32), split=False))
        self.step += 1
        return {k: v.item() for k, v in out.items()} | {"lr": lr}

    def measure_grad_share(self, batch: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
        """tinyar/gradshare.py's statistics on a batch, at the current weights (call it before
        train_step on the same batch). Needs cfg.grad_share."""
        return self.grad_share(self.put(batch), None if mask is None else self.put(mask))

    def next_batch(self, corpus: Corpus) -> tuple[np.ndarray, np.ndarray | None]:
        """(B,T+1) windows and, with masking on, (B,T) mask positions, both drawn from the data RNG
        (saved in checkpoints). Drawn here, not in the loss: the jitted step takes them as input."""
        c = self.cfg
        batch = corpus.batch(self.rng, c.batch_size)
        mask = choose_mask_positions(self.rng, c.batch_size, c.seq_len, c.mask_prob) if c.mask_prob > 0 else None
        return batch, mask

    def evaluate(self, batches: list[np.ndarray]) -> dict[str, float]:
        """Validation cross-entropy (no masking) over fixed batches, with perplexity and bits/byte."""
        ce = float(np.mean([self._jit_eval(self.put(b)).item() for b in batches]))
        return {"val_ce": ce, "val_ppl": math.exp(min(ce, 50.0)), "val_bpb": ce / math.log(2)}

    # checkpoint state: everything that resuming needs, as numpy arrays + JSON-able metadata
    def state_tensors(self) -> tuple[dict[str, Tensor], set[str]]:
        """Every tensor a checkpoint holds, each once: the weights as model.*, the optimizer's own
        state (moments, step counts b1_t/b2_t, lr) as optim.*. -> (tensors, the optim.* names
        that are the weights again, left out: older checkpoints stored each weight three times)"""
        tensors = {f"model.{k}": v for k, v in get_state_dict(self.model).items()}
        weights = {id(v) for v in tensors.values()}
        optim = {f"optim.{k}": v for k, v in get_state_dict(self.opt).items()}
        aliases = {k for k, v in optim.items() if id(v) in weights}
        return tensors | {k: v for k, v in optim.items() if k not in aliases}, aliases

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything to save, as numpy. Raises Diverged rather than hand out a NaN/inf state (an
        update can overflow the weights while the loss of that step was still finite)."""
        arrays = {k: v.numpy() for k, v in self.state_tensors()[0].items()}
        for name, a in arrays.items():
            if not np.isfinite(a).all():
                raise Diverged(self.step, f"the weights ({name})", a[~np.isfinite(a)].flat[0])
        return arrays

    def state_meta(self) -> dict:
        return {"config": self.cfg.to_dict(), "step": self.step, "rng": self.rng.bit_generator.state}

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore weights, optimizer moments and step counts (AdamW's b1_t/b2_t), the step and the
        data RNG. Everything is checked before anything is assigned, so a mismatch changes nothing."""
        targets, aliases = self.state_tensors()
        arrays = {k: a for k, a in arrays.items() if k not in aliases}   # an older file's copies of the weights
        missing, extra = sorted(set(targets) - set(arrays)), sorted(set(arrays) - set(targets))
        if missing or extra:
            name = (missing or extra)[0]
            raise ValueError(f"checkpoint {'lacks' if missing else 'has an unexpected'} tensor {name} "
                             f"({len(missing)} missing, {len(extra)} unexpected): it was written by a different "
                             f"model configuration")
        for name, t in targets.items():
            if tuple(arrays[name].shape) != tuple(t.shape):
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(arrays[name].shape)}, the model needs "
                                 f"{tuple(t.shape)}: it was written by a different configuration")
            if arrays[name].dtype != np.dtype(t.dtype.fmt):
                raise ValueError(f"checkpoint tensor {name} is {arrays[name].dtype}, the model needs "
                                 f"{np.dtype(t.dtype.fmt)}: the file is damaged or not tinyar's")
        for name, t in targets.items():
            t.assign(self.put(arrays[name], split=False)).realize()
        self.step = int(meta["step"])
        self.rng.bit_generator.state = meta["rng"]


def train(trainer: Trainer, corpus: Corpus, *, on_checkpoint: Callable[[Trainer], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
    """Run until cfg.steps (or should_stop() turns true between steps), yielding a row dict at
    each log step ("train") and eval ("val"). Raises Diverged on a NaN/inf, before the spoiled
    state can reach a checkpoint."""
    cfg = trainer.cfg
    val_batches = corpus.val_batches(cfg.eval_batches, cfg.batch_size)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    t_last, steps_since = time.perf_counter(), 0
    while trainer.step < cfg.steps and not should_stop():
        batch, mask = trainer.next_batch(corpus)
        step = trainer.step + 1
        logged = step % cfg.log_every == 0 or step == cfg.steps or step == 1
        shares = {}
        if cfg.grad_share and logged:   # this very batch, at the weights this step starts from
            t0 = time.perf_counter()
            shares = trainer.measure_grad_share(batch, mask)
            t_last += time.perf_counter() - t0   # not billed to the training speed (tok_s)
        row = trainer.train_step(batch, mask) | shares
        steps_since += 1
        bad = first_non_finite(row)
        if bad:
            raise Diverged(step, bad, row[bad], row)
        last = step == cfg.steps
        if logged:
            now = time.perf_counter()
            yield {"kind": "train", "step": step, **row, "tok_s": steps_since * tokens_per_step / (now - t_last),
                   "tokens": step * tokens_per_step}
            t_last, steps_since = now, 0
        if step % cfg.eval_every == 0 or last:
            yield {"kind": "val", "step": step, "tokens": step * tokens_per_step, **trainer.evaluate(val_batches)}
        if on_checkpoint and (step % cfg.save_every == 0 or last):
            on_checkpoint(trainer)
        if step % cfg.log_every == 0 or last:
            t_last = time.perf_counter()  # don't bill eval and checkpoint time to the next window
