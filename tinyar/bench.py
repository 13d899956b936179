"""How fast tinyar trains here, next to the same model in PyTorch: `python cli.py bench`.

Times the real training step (tinyar.train.Trainer: forward, backward, clipping, AdamW, one
TinyJit call) on windows of the default corpus:
  first step    tracing + kernel planning + code generation + compiling + running
  capture       the second call, when TinyJit records the kernels
  step          median of the steady steps that follow (only kernels run)
With torch and x-transformers importable (`pip install -e .[bench]`), the same model with the
same loss settings runs as x-transformers' TransformerWrapper + AutoregressiveWrapper in the
same process, its steps interleaved with tinyar's so that the machine's load hits both alike.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from tinyar.config import Config
from tinyar.data import PAD, Corpus, default_corpus


def model_flops(cfg: Config) -> float:
    """Analytic FLOPs of one training step: 6 per matmul weight per token (forward 2, backward
    4) plus attention's two (T,T) matmuls per layer, computed in full (causal half included)."""
    D, inner, T = cfg.dim, cfg.heads * cfg.head_dim, cfg.seq_len
    weights = cfg.depth * (4 * D * inner + 2 * 4 * D * D) + D * cfg.vocab + (2 * D * D if cfg.use_next_embed else 0)
    tokens = cfg.batch_size * T
    return 6 * weights * tokens + cfg.depth * 3 * 4 * cfg.batch_size * T * T * inner


def numpy_matmul_flops(n: int = 1024, reps: int = 5) -> float:
    """FLOP/s of an n x n float32 matmul in numpy (BLAS): what this machine's cores can do."""
    a, b = (np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times)


# peak resident memory of this process (Linux): reset the high-water mark, read it back
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int | None:
    """Reset the peak-RSS counter; -> current RSS in bytes (None where unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    rss = _status_kib("VmRSS")
    return None if rss is None else rss * 1024


def peak_rss() -> int | None:
    hwm = _status_kib("VmHWM")
    return None if hwm is None else hwm * 1024


def tinygrad_buffer_bytes() -> int:
    """Bytes of tinygrad device buffers allocated now (weights, moments, the JIT's arena)."""
    from tinygrad.helpers import GlobalCounters
    return GlobalCounters.mem_used


class TinyarRun:
    """tinyar's Trainer, one train_step per call; tuned=False compiles its kernels with
    tinygrad's default schedules even where a tuned table has options (tinyar/tuning.py)."""
    name = "tinyar"

    def __init__(self, cfg: Config, corpus: Corpus, devices: tuple[str, ...] | None = None, tuned: bool = True):
        from tinygrad import Device
        from tinygrad.helpers import DEV
        from tinyar.train import Trainer
        self.cfg, self.trainer, self.corpus, self.tuned = cfg, Trainer(cfg, devices=devices), corpus, tuned
        self.device = ",".join(devices) if devices else (repr(DEV) or Device.DEFAULT)   # CPU:LLVM, not CPU

    def step(self) -> float:
        from tinyar import tuning
        batch, mask = self.trainer.next_batch(self.corpus)
        t = time.perf_counter()
        with tuning.active(self.tuned):   # matters only while kernels compile (the first two steps)
            self.trainer.train_step(batch, mask)   # reads every loss back: waits for the device
        return time.perf_counter() - t


def torch_available() -> str | None:
    """None if torch and x-transformers import, else why not."""
    try:
        import torch  # noqa: F401
        import x_transformers  # noqa: F401
        return None
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e .[bench])"


class TorchRun:
    """The same model and loss settings in x-transformers (PyTorch eager, CPU), AdamW with
    decay on matrices only and the same global-norm clipping."""
    name = "x-transformers"

    def __init__(self, cfg: Config, corpus: Corpus):
        import torch
        from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper
        torch.manual_seed(cfg.seed)
        # the wrapper runs the net on all T+1 tokens of a window (tinyar: T), so it needs T+1 positions
        net = TransformerWrapper(num_tokens=cfg.vocab, max_seq_len=cfg.seq_len + 1,
                                 attn_layers=Decoder(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads,
                                                     attn_dim_head=cfg.head_dim),
                                 add_continuous_pred_head=cfg.next_embed_weight > 0)
        self.model = AutoregressiveWrapper(net, ignore_index=PAD, pad_value=PAD, mask_prob=cfg.mask_prob,
                                           add_attn_z_loss=cfg.zloss_weight > 0,
                                           next_embed_loss_weight=cfg.next_embed_weight)
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
        self.cfg, self.corpus, self.torch = cfg, corpus, torch
        self.rng = np.random.default_rng(cfg.seed)
        self.device = f"torch {torch.__version__.split('+')[0]} CPU×{torch.get_num_threads()}"

    def step(self) -> float:
        tokens = self.torch.from_numpy(self.corpus.batch(self.rng, self.cfg.batch_size)).long()
        t = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss = self.model(tokens)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        loss.item()
        return time.perf_counter() - t


def measure(runs: dict, steps: int, on_status=lambda msg: None) -> list[dict]:
    """runs: name -> a function making a run (TinyarRun, TorchRun). Build each and take its
    first two steps (its peak memory is measured up to there), then `steps` steady steps of
    every run, interleaved. -> one row dict per run."""
    built, rows = {}, {}
    for name, make in runs.items():
        on_status(f"{name}: building and compiling (the first step)")
        base, buffers = reset_peak_rss(), tinygrad_buffer_bytes()
        t = time.perf_counter()
        run = make()
        init = time.perf_counter() - t
        first, capture = run.step(), run.step()
        peak = peak_rss()
        built[name] = run
        rows[name] = {"name": name, "device": run.device, "init_s": init, "first_s": first, "capture_s": capture,
                      "peak_rss": None if base is None or peak is None else peak - base,
                      "buffers": tinygrad_buffer_bytes() - buffers if isinstance(run, TinyarRun) else None,
                      "times": []}
    for i in range(steps):
        on_status(f"steady steps, interleaved: {i + 1}/{steps}")
        for name, run in built.items():
            rows[name]["times"].append(run.step())
    for name, r in rows.items():
        cfg = built[name].cfg
        r["step_s"] = statistics.median(r["times"])
        r["tokens_per_s"] = cfg.batch_size * cfg.seq_len / r["step_s"]
        r["flops_per_s"] = model_flops(cfg) / r["step_s"]
        r["loss"] = loss_settings(cfg)
    return list(rows.values())


def stdlib_corpus(cfg: Config) -> Corpus:
    return Corpus(default_corpus(), cfg.seq_len, name="python stdlib sources")


def loss_settings(cfg: Config) -> str:
    parts = ["ce"]
    if cfg.zloss_weight:
        parts.append(f"{cfg.zloss_weight:g}·zloss")
    if cfg.next_embed_weight:
        parts.append(f"{cfg.next_embed_weight:g}·next_embed")
    if cfg.mask_prob:
        parts.append(f"mlm {cfg.mask_prob:g} ({cfg.mask_mode})")
    return " + ".join(parts)


def component_configs(cfg: Config, zloss: float = 1e-4, next_embed: float = 0.1, mlm: float = 0.15) -> dict[str, Config]:
    """CE only, each component added alone, and all of them: what each one costs."""
    base = cfg.replace(zloss_weight=0.0, next_embed_weight=0.0, next_embed_head=False, mask_prob=0.0)
    return {"ce only": base, "+ z-loss": base.replace(zloss_weight=zloss),
            "+ next-embed": base.replace(next_embed_weight=next_embed), f"+ mlm {mlm:g}": base.replace(mask_prob=mlm),
            "all": base.replace(zloss_weight=zloss, next_embed_weight=next_embed, mask_prob=mlm)}


def set_beam(n: int) -> None:
    """BEAM search: time up to n candidate schedules per kernel and keep the fastest. Found
    schedules are cached by tinygrad (and the kernels by tinyar.kernel_cache), so only the
    first run of a shape pays for the search."""
    from tinygrad.helpers import BEAM
    BEAM.value = n


def _first_step_child(cfg_json: str) -> None:
    """In a fresh process: build tinyar's run and time its first step, with the kernel cache on
    (saved after), then print {"build_s", "first_s"} (seconds) as JSON. Used by first_step()."""
    import json

    from tinyar import kernel_cache
    kernel_cache.enable()
    cfg = Config.from_dict(json.loads(cfg_json))
    t = time.perf_counter()
    run = TinyarRun(cfg, stdlib_corpus(cfg))
    build = time.perf_counter() - t
    first = run.step()
    kernel_cache.save()
    print(json.dumps({"build_s": build, "first_s": first}))


def first_step(cfg: Config, device: str | None = None) -> dict:
    """The first training step of a fresh process, cold (empty caches: tinygrad's compiled
    kernels and tinyar's kernel cache in a new temporary folder) and then warm (a second process
    on those same caches). -> {"cold_s", "warm_s"}"""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    out = {}
    with tempfile.TemporaryDirectory(prefix="tinyar-first-step-") as tmp:
        env = {**os.environ, "CACHEDB": str(Path(tmp) / "tinygrad.db"), "TINYAR_KERNEL_CACHE": str(Path(tmp) / "k.pkl")}
        if device:
            env["DEV"] = device
        code = f"from tinyar.bench import _first_step_child; _first_step_child({json.dumps(json.dumps(cfg.to_dict()))})"
        for name in ("cold_s", "warm_s"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            if res.returncode:
                raise RuntimeError(f"first-step process failed: {res.stderr.strip().splitlines()[-1:]}")
            out[name] = json.loads(res.stdout.strip().splitlines()[-1])["first_s"]
    return out


def run(cfg: Config, timed_steps: int = 10, vs_torch: bool = False, components: bool = False,
        torch_threads: int | None = None, on_status=lambda msg: None, devices: tuple[str, ...] | None = None,
        first: bool = False, device: str | None = None, tuned: bool = True) -> dict:
    """The whole benchmark; devices: several for data-parallel tinyar; first: also time the first
    step cold and warm in fresh processes on `device`.
    -> {"rows": [...], "numpy_flops": float, "torch": None or why not, "vs_torch", "rss_vs_torch", "first_step",
        "tuned_kernels": how many kernels were compiled with tuned options}"""
    corpus = stdlib_corpus(cfg)
    runs = {"tinyar": lambda: TinyarRun(cfg, corpus, devices, tuned)}
    if components:
        runs = {f"tinyar {name}": (lambda c=c: TinyarRun(c, corpus, devices, tuned))
                for name, c in component_configs(cfg).items()}
    why_not = torch_available() if vs_torch else "not asked for (--vs-torch)"
    if vs_torch and why_not is None:
        import torch
        if torch_threads:
            torch.set_num_threads(torch_threads)
        runs["x-transformers"] = lambda: TorchRun(cfg, corpus)
    rows = measure(runs, timed_steps, on_status)
    ref = next((r for r in rows if r["name"] == "x-transformers"), None)
    for r in rows:
        r["vs_torch"] = ref["step_s"] / r["step_s"] if ref else None
    tiny = next(r for r in rows if r["name"].startswith("tinyar"))
    rss_ratio = (tiny["peak_rss"] / ref["peak_rss"]
                 if ref and tiny["peak_rss"] is not None and ref["peak_rss"] else None)   # None: not measurable
    first_step_s = None
    if first:
        on_status("first step in fresh processes: cold caches, then warm")
        first_step_s = first_step(cfg, device)
    on_status("numpy matmul reference")
    from tinyar import tuning
    return {"rows": rows, "numpy_flops": numpy_matmul_flops(), "torch": why_not,
            "tuned_kernels": tuning.applied() if tuned else 0,
            "vs_torch": tiny["vs_torch"], "rss_vs_torch": rss_ratio, "first_step": first_step_s}


def tune(cfg: Config, device: str, seconds: float, per_kernel: float, out: Path, ab_steps: int = 6,
         on_status=lambda msg, frac: None) -> dict:
    """Find kernel options for this model's training step on `device` within `seconds`, write
    them to `out` (tinyar/tuning.py), then time tinygrad's defaults against the table, steps
    interleaved in this process. -> {"kernels": how many the step has, "tuned": the table's rows,
    "new": rows added now, "path", "ab": the two A/B rows (measure()), "speedup": defaults/tuned}"""
    from tinyar import tuning
    corpus, t0 = stdlib_corpus(cfg), time.monotonic()
    on_status("building the model and collecting its step's kernels", 0.0)
    run = TinyarRun(cfg, corpus, tuned=False)
    kernels = tuning.step_kernels(lambda: (run.step(), run.step()))
    left = max(0.0, seconds - (time.monotonic() - t0))
    start, old = time.monotonic(), tuning.read_rows(out, device)   # an existing table is extended
    new = tuning.tune(kernels, device, left, per_kernel, done=frozenset(old),
                      on_progress=lambda msg: on_status(msg, min(1.0, (time.monotonic() - start) / max(left, 1e-9))))
    rows = {**old, **new}
    tuning.write_table(out, device, cfg.to_dict(), rows)
    speedup, ab = None, []
    if ab_steps and rows:
        tuning.enable(device)
        ab = measure({"tinygrad defaults": lambda: TinyarRun(cfg, corpus, tuned=False),
                      "tuned": lambda: TinyarRun(cfg, corpus, tuned=True)}, ab_steps,
                     on_status=lambda msg: on_status(f"A/B: {msg}", 1.0))
        speedup = ab[0]["step_s"] / ab[1]["step_s"]
    return {"kernels": len(kernels), "tuned": rows, "new": len(new), "path": str(out), "ab": ab, "speedup": speedup}
