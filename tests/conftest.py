"""Shared test settings.

tinygrad spends tens of seconds generating kernels for every new graph shape, so the whole
suite shares a few tiny configurations: use TINY (and TINY_NE when a next-embed head is
needed) rather than inventing new shapes. The oracle tests (test_loss.py) share one TINY_NE
model, batch, mask and fixed loss weights through the `tiny` fixture below, whose
forward+backward runs are computed once per session (`tiny.run(mode)`). The device comes
from TINYAR_TEST_DEVICE (default CPU), so the suite can run on any backend:
TINYAR_TEST_DEVICE=CL pytest.
"""
import os

os.environ["DEV"] = os.environ.get("TINYAR_TEST_DEVICE", os.environ.get("DEV", "CPU"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tinygrad import Tensor  # noqa: E402
from tinygrad.nn.state import get_state_dict  # noqa: E402

from tinyar.config import Config, flag  # noqa: E402
from tinyar.data import PAD  # noqa: E402
from tinyar.loss import autoregressive_loss  # noqa: E402
from tinyar.model import Decoder  # noqa: E402

# the one model shape most tests use: B=2, T=8, D=16, 2 layers, 2 heads
TINY = Config(dim=16, depth=2, heads=2, seq_len=8, batch_size=2, steps=40, warmup=4, lr=1e-2,
              eval_every=20, eval_batches=1, log_every=10, save_every=20)
TINY_NE = TINY.replace(next_embed_head=True)
TEXT = b"the quick brown fox jumps over the lazy dog. " * 40   # a small corpus that TINY learns fast


def invoke(*args):
    """Run `python cli.py ARGS...` in this process (Click's runner). -> its Result"""
    from click.testing import CliRunner

    from cli import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def error_line(res, code=2) -> str:
    """The single 'error: ...' line a failed command printed (and nothing else)."""
    assert res.exit_code == code, res.output
    assert isinstance(res.exception, SystemExit), res.exception   # a deliberate exit, not a crash
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


def cli_flags(cfg: Config, *fields: str) -> list[str]:
    """The command-line options that set these fields of cfg: ["--dim", "16", ...] (config.flag)."""
    return [arg for f in fields for arg in (flag(f), str(getattr(cfg, f)))]


TINY_FLAGS = cli_flags(TINY, "dim", "depth", "heads", "seq_len", "batch_size")   # TINY's shape for `train`


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return TINY


# ---------------------------------------------------------------- oracle tests (test_loss.py)
ZLOSS_WEIGHT = 0.05       # fixed, so every run shares one graph per mask mode
NEXT_EMBED_WEIGHT = 0.3
TARGET_ONLY = 200         # a byte that appears in the batch only as the very last target
KIND = {"replace": "mse", "fcm": "l1"}  # the two masked runs also cover both next-embed kinds


def random_weights(state: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """O(1) random weights for every parameter, so every term of the forward matters
    (the model's own init is so small that attention is nearly uniform and a wrong scale
    would go unnoticed). Matrices (out, in) ~ N(0, 1/in); embeddings ~ N(0, 1); norm
    scales ~ 1 + N(0, 0.2^2); biases ~ N(0, 0.1^2)."""
    out = {}
    for name, t in state.items():
        if name in ("tok_emb", "pos_emb"):
            w = rng.normal(0, 1.0, t.shape)
        elif "norm" in name:
            w = 1 + 0.2 * rng.normal(size=t.shape)
        elif name.endswith("bias"):
            w = 0.1 * rng.normal(size=t.shape)
        else:
            w = rng.normal(0, 1 / np.sqrt(t.shape[1]), t.shape)
        out[name] = w.astype(np.float32)
    return out


class Spy:
    """Stands in for a Decoder and keeps the tensors autoregressive_loss passes through it,
    so tests can read the model's inputs and take gradients w.r.t. logits, hidden and pred."""

    def __init__(self, model: Decoder):
        self.model, self.seen = model, {}
        self.next_embed = None if model.next_embed is None else self._next_embed

    def embed(self, ids):
        return self.model.embed(ids)

    def _next_embed(self, hidden):
        self.seen["pred"] = pred = self.model.next_embed(hidden)
        return pred

    def __call__(self, inp, hidden_keys=None):
        logits, lses, hidden = self.model(inp, hidden_keys)
        self.seen.update(inp=inp, hidden_keys=hidden_keys, logits=logits, lses=lses, hidden=hidden)
        return logits, lses, hidden


class Tiny:
    """The TINY_NE model (dim 16, depth 2, heads 2, seq_len 8, batch 2, vocab 258, with a
    next-embed head) with O(1) random weights, one batch with PAD targets, one mask."""

    def __init__(self):
        self.cfg = TINY_NE.validate()
        B, T = self.cfg.batch_size, self.cfg.seq_len
        rng = np.random.default_rng(0)
        self.model = Decoder(self.cfg)
        self.state = get_state_dict(self.model)
        self.weights = random_weights(self.state, rng)
        for name, t in self.state.items():
            t.assign(Tensor(self.weights[name])).realize()
        # (B, T+1) tokens: printable bytes; row 1 ends in two PADs (a short padded document),
        # so its last two targets are ignored; TARGET_ONLY occurs only as row 0's last target.
        tokens = rng.integers(32, 127, (B, T + 1))
        tokens[1, -2:] = PAD
        tokens[0, -1] = TARGET_ONLY
        self.tokens = tokens.astype(np.int32)
        # k = floor(8 * 0.25) = 2 masked positions per row, never position 0
        self.mask = np.zeros((B, T), bool)
        self.mask[0, [2, 5]] = True
        self.mask[1, [1, 4]] = True
        self._runs = {}

    def run(self, mode: str) -> dict:
        """autoregressive_loss with this batch, mask and both loss weights on, in `mode`
        ('replace' with mse or 'fcm' with l1), plus the gradient of the total w.r.t. every
        weight and w.r.t. logits, hidden and pred, all realized together, as numpy."""
        if mode not in self._runs:
            spy = Spy(self.model)
            out = autoregressive_loss(spy, self.tokens, mask_positions=self.mask, mask_mode=mode,
                                      zloss_weight=ZLOSS_WEIGHT, next_embed_weight=NEXT_EMBED_WEIGHT,
                                      next_embed_kind=KIND[mode])
            s = spy.seen
            names = list(self.state)
            grads = out["total"].gradient(*[self.state[n] for n in names], s["logits"], s["hidden"], s["pred"])
            seen = [s["inp"], s["logits"], s["hidden"], s["pred"], *s["lses"]]
            Tensor.realize(*out.values(), *grads, *seen)
            self._runs[mode] = {
                "loss": {k: float(v.item()) for k, v in out.items()},
                "grad": {n: g.numpy() for n, g in zip(names, grads)},
                "dlogits": grads[-3].numpy(), "dhidden": grads[-2].numpy(), "dpred": grads[-1].numpy(),
                "inp": s["inp"].numpy(), "hidden_keys": None if s["hidden_keys"] is None else s["hidden_keys"].numpy(),
                "logits": s["logits"].numpy(), "hidden": s["hidden"].numpy(), "pred": s["pred"].numpy(),
                "lses": [l.numpy() for l in s["lses"]],
            }
        return self._runs[mode]


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    """The oracle tests' shared model, batch, mask and (cached) forward+backward runs."""
    return Tiny()
