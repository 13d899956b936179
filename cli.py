"""tinyar's command line: `python cli.py train [CORPUS] --mlm 0.15 --zloss 1e-4`.

Thin on purpose: the library returns numbers, this file turns them into Rich tables.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tinyar.config import DTYPES, Config, ConfigError, flag
from tinyar.data import Corpus, CorpusError, copy_stream, default_corpus

console = Console()

# CLI flag -> Config field, one to one
CONFIG_OPTIONS = [
    ("--mlm", "mask_prob", float, "fraction of input positions masked during training, in [0, 1)"),
    ("--mlm-mode", "mask_mode", click.Choice(["replace", "fcm"]), "replace: MASK token; fcm: hide as attention keys"),
    ("--zloss", "zloss_weight", float, "weight of the attention z-loss"),
    ("--next-embed", "next_embed_weight", float, "weight of the next-embed loss (adds the head)"),
    ("--next-embed-loss", "next_embed_kind", click.Choice(["mse", "l1"]), "next-embed distance"),
    ("--steps", "steps", int, "optimizer steps"),
    ("--batch-size", "batch_size", int, "windows per step"),
    ("--seq-len", "seq_len", int, "tokens per window"),
    ("--dim", "dim", int, "model width"),
    ("--depth", "depth", int, "transformer blocks"),
    ("--heads", "heads", int, "attention heads (must divide --dim)"),
    ("--lr", "lr", float, "peak learning rate"),
    ("--warmup", "warmup", int, "linear warmup steps"),
    ("--grad-clip", "grad_clip", float, "global gradient-norm clip (0 = off)"),
    ("--weight-decay", "weight_decay", float, "AdamW decay on matrices"),
    ("--eval-every", "eval_every", int, "validation every N steps"),
    ("--log-every", "log_every", int, "one table row every N steps"),
    ("--save-every", "save_every", int, "checkpoint every N steps"),
    ("--seed", "seed", int, "same seed + same device -> same losses"),
    ("--dtype", "dtype", click.Choice(DTYPES),
     "matmul precision; weights, norms, softmax and losses stay float32"),
]


def config_options(f):
    defaults = Config()
    for flag, field, typ, help_ in reversed(CONFIG_OPTIONS):
        f = click.option(flag, field, type=typ, default=None,
                         help=f"{help_} [default: {getattr(defaults, field)}]")(f)
    return f


def fail(msg: str, code: int = 2) -> None:
    """One line on stderr, a non-zero exit code (2: bad input), no traceback."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class OneLineErrors(click.Group):
    """Click's own usage errors (a bad option value, an unknown flag) as one line, like ours."""

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as e:
            self._fail(e)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            self._fail(e)

    @staticmethod
    def _fail(e: click.UsageError) -> None:
        where = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
        fail(" ".join(e.format_message().split()) + where)


def fmt(x: float | None) -> str:
    if x is None:
        return "off"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def train_columns(cfg: Config, row: dict) -> list[str]:
    z_on, ne_on = cfg.zloss_weight > 0, cfg.next_embed_weight > 0
    return [str(row["step"]), fmt(row["total"]), fmt(row["ce"]),
            fmt(row["zloss"]), fmt(cfg.zloss_weight * row["zloss"] if z_on else None),
            fmt(row["next_embed"] if cfg.use_next_embed else None),
            fmt(cfg.next_embed_weight * row["next_embed"] if ne_on else None),
            fmt(row["grad_norm"]), f"{row['lr']:.2e}", f"{row['tok_s']:,.0f}"]


TRAIN_HEADERS = ["step", "total", "ce", "z-loss", "z·w", "next-emb", "ne·w", "|grad|", "lr", "tok/s"]
VAL_HEADERS = ["step", "val ce", "perplexity", "bits/byte"]


def val_columns(row: dict) -> list[str]:
    return [str(row["step"]), fmt(row["val_ce"]), fmt(row["val_ppl"]), f"{row['val_bpb']:.3f}"]


@click.group(cls=OneLineErrors)
def cli():
    """tinyar: train a tiny decoder and watch every loss component."""


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM ask training to stop after the current step; a second signal
    gives up at once (KeyboardInterrupt). Call it to ask whether a stop was requested."""

    def __init__(self):
        self.signum = None
        self.unfinished = False  # the signal cut a step short (its update must not be saved)

    def __enter__(self):
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: a handler may interrupt a print that holds the stream's lock
        os.write(2, f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                    f"(press Ctrl-C again to quit without saving)\n".encode())

    def __call__(self) -> bool:
        return self.signum is not None


MODEL_SHAPE = ("dim", "depth", "heads", "dim_head", "seq_len", "vocab")  # fixed by the saved weights


def resume_config(saved: Config, given: dict) -> tuple[Config, list[str]]:
    """The run's saved config with the options given now; shape options can't change."""
    for field in MODEL_SHAPE:
        if field in given and given[field] != getattr(saved, field):
            fail(f"{flag(field)} {given[field]} differs from the resumed run's {getattr(saved, field)}: a run keeps "
                 f"its model shape; drop {flag(field)}, or start a new run in another --out")
    cfg = saved.replace(**given)
    if cfg.use_next_embed != saved.use_next_embed:
        fail("--next-embed can't be switched on or off when resuming (it adds or removes the next-embed head); "
             "start a new run instead")
    changed = [f"{flag(k)} {getattr(saved, k)} -> {v}" for k, v in given.items() if getattr(saved, k) != v]
    return cfg, changed


def run_name(args: tuple[str, ...]) -> str:
    if not args:
        return "default"
    if args[0] == "-":
        return "stdin"
    return "".join(c for c in Path(args[0]).stem if c.isalnum() or c in "._-") or "corpus"


def prepare_run_dir(out: Path, resuming: bool, force: bool) -> None:
    """Refuse an --out that can't hold a run; never start over on top of a run unless --force."""
    from tinyar import checkpoint as ckpt
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file, not a folder; pass a folder name (it is created if missing)")
    if not resuming and out.is_dir() and ckpt.holds_run(out) and not force:
        fail(f"{out} already holds a run; continue it with --resume {out}, or pass --force to start over "
             f"(deletes its checkpoints and metrics)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"cannot write to run folder {out}: {e.strerror}; pick another --out")


def divergence_message(e, cfg: Config, out: Path, corpus: tuple[str, ...], good: Path | None) -> str:
    """Which number blew up at which step, what was kept, and what to change."""
    values = " (" + ", ".join(f"{k} {e.row[k]:.4g}" for k in ("ce", "zloss", "next_embed", "total", "grad_norm")) \
        + ")" if e.row else ""
    lower = ["--lr", f"{cfg.lr / 3:.2g}"]
    advice = f"lower --lr (now {cfg.lr:g}, e.g. {' '.join(lower)})" + (
        f" or --zloss (now {cfg.zloss_weight:g})" if cfg.zloss_weight else
        ", or add --zloss 1e-4 to keep attention logits small")
    where = (f"kept the last good checkpoint {good}; rewind to it with: "
             f"{command_line('train', '--resume', str(out), *lower)}" if good else
             f"no checkpoint was saved before it; start over with: "
             f"{command_line('train', *corpus, '--out', str(out), '--force', *lower)}")
    return f"{e}{values}; nothing after it was saved. {advice}. {where}"


def stop_message(stop: StopOnSignal, step: int, steps: int, good: Path | None, resume_cmd: str) -> str:
    name = signal.Signals(stop.signum).name
    msg = (f"{name}: stopped during step {step + 1}, which was not saved" if stop.unfinished else
           f"{name}: stopped after step {step} of {steps}")
    if good:
        return f"{msg}; checkpoint {good}\nresume with: {resume_cmd}"
    return f"{msg}; no step finished, so nothing was saved\nstart again with: {command_line(*sys.argv[1:])}"


def command_line(*args: str) -> str:
    """A `python cli.py ...` command line that works from the current folder."""
    script = os.path.relpath(__file__)
    return shlex.join(["python", script if not script.startswith("..") else os.path.abspath(__file__), *args])


@cli.command()
@click.argument("corpus", nargs=-1)
@config_options
@click.option("--device", default=None, help="tinygrad device, e.g. CPU, CL, CPU:LLVM, CUDA, METAL [default: DEV or tinygrad's pick]")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run folder [default: runs/<corpus name>]")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="continue the run in this folder from its newest checkpoint (exactly: same losses as if never stopped)")
@click.option("--keep", type=int, default=3, show_default=True, help="newest checkpoints to keep (at least 1)")
@click.option("--force", is_flag=True, help="start over in a folder that holds a run (deletes its checkpoints)")
@click.option("--sample-tokens", type=int, default=200, show_default=True, help="length of the final sample")
@click.option("--eval-sample-tokens", type=int, default=80, show_default=True,
              help="length of the one-line sample after each validation (0 = off)")
@click.option("--beam", type=click.IntRange(0, 16), default=0, show_default=True,
              help="BEAM search over kernel schedules: faster steps after minutes of search, once per model shape")
def train(corpus, device, out, resume, keep, force, sample_tokens, eval_sample_tokens, beam, **fields):
    """Train on CORPUS: files, folders (every file below, sorted), glob patterns, or - for stdin,
    read as one byte stream (default: this Python's standard-library sources).

    Ctrl-C or SIGTERM stops after the current step, saves a checkpoint and prints the command
    that resumes it. A resumed run remembers its corpus and settings; --steps (and --lr, the
    logging intervals ...) may change, the model shape may not."""
    from tinyar import checkpoint as ckpt
    from tinyar.devices import DeviceError, check_dtype, use_device

    given = {k: v for k, v in fields.items() if v is not None}
    given_corpus = bool(corpus)
    # 1. settings: fresh, or the resumed run's checkpoint plus what is given now
    meta, arrays, changed, path = None, None, [], None
    if resume is not None:
        if not resume.is_dir():
            fail(f"--resume {resume} is not a run folder; pass the --out folder of an earlier run")
        if out is not None and out.resolve() != resume.resolve():
            fail(f"--out {out} and --resume {resume} name different folders; a resumed run stays in its folder")
        path, out = ckpt.latest(resume), resume
        if path is None:
            fail(f"no checkpoint in {resume}; start a new run without --resume")
        try:
            saved, arrays, meta = ckpt.load(path)
        except ckpt.CheckpointError as e:
            older = ckpt.checkpoints(resume)[:-1]
            fail(f"{e}" + (f" (the next newest is {older[-1].name})" if older else ""))
        cfg, changed = resume_config(saved, given)
        if cfg.steps <= meta["step"]:
            fail(f"the run in {resume} is already at step {meta['step']} of {saved.steps}; pass --steps with a "
                 f"larger number to train further")
        corpus = corpus or tuple(meta.get("corpus", []))
    else:
        cfg = Config().replace(**given)
    try:
        cfg.validate()
    except ConfigError as e:
        fail(str(e))
    if keep < 1:
        fail(f"--keep must be at least 1 (got {keep}): the newest checkpoint is what --resume continues from")
    if sample_tokens < 0:
        fail(f"--sample-tokens must be >= 0 (got {sample_tokens}); 0 skips the sample")

    # 2. the run folder, then the corpus (stdin is copied into the run folder so a resume finds it)
    out = out or Path("runs") / run_name(corpus)
    prepare_run_dir(out, resuming=resume is not None, force=force)
    try:
        files = [str(copy_stream(sys.stdin.buffer, out / ckpt.STDIN_COPY)) if a == "-" else a for a in corpus]
        data = Corpus(files, cfg.seq_len) if files else Corpus(default_corpus(), cfg.seq_len, name="python stdlib sources")
        dev = use_device(device)
        check_dtype(cfg.dtype, dev)
    except (CorpusError, DeviceError) as e:
        remembered = resume is not None and not given_corpus and isinstance(e, CorpusError)
        fail(f"{e}" + (f" (the run's remembered corpus); pass it again: "
                       f"{command_line('train', 'CORPUS', '--resume', str(out))}" if remembered else ""))
    except OSError as e:
        fail(f"cannot copy stdin into {out}: {e.strerror}")
    if meta is not None and meta.get("corpus_bytes", len(data)) != len(data):
        console.print(f"[yellow]note:[/] the corpus now has {len(data):,} bytes, the run was trained on "
                      f"{meta['corpus_bytes']:,}; continuing on the new one")

    # 3. the trainer, restored exactly when resuming
    from tinyar import kernel_cache
    from tinyar.bench import set_beam
    from tinyar.train import Diverged, Trainer, train as train_loop
    kernel_cache.enable()   # generated kernels from earlier runs: the first step takes seconds, not minutes
    if beam:
        set_beam(beam)
        console.print(f"[yellow]--beam {beam}:[/] the first steps search kernel schedules (minutes on a CPU; on "
                      f"PoCL's CL much longer); tinygrad caches the result, so later runs of this shape start fast")
    try:
        trainer = Trainer(cfg, devices=dev if isinstance(dev, tuple) else None)
    except ValueError as e:
        fail(str(e))
    if meta is not None:
        try:
            trainer.load_state(arrays, meta)
        except (ValueError, TypeError, KeyError) as e:
            fail(f"{path}: {e}")
        ckpt.trim_metrics(out, trainer.step)
    elif force:
        ckpt.clear_run(out)
    run_meta = {"corpus": [os.path.abspath(f) for f in files], "corpus_bytes": len(data)}

    console.print(f"[bold]tinyar[/] {cfg.dim}d×{cfg.depth}L×{cfg.heads}h, {trainer.model.num_params():,} params · "
                  f"corpus {data.name} ({len(data):,} bytes) · device {dev}"
                  + (f" · matmuls in {cfg.dtype}" if cfg.dtype != "float32" else "") + f" · run folder {out}")
    if meta is not None:
        console.print(f"resuming from {path} (step {trainer.step} of {cfg.steps})"
                      + (f" · changed: {', '.join(changed)}" if changed else ""))
    console.print(f"loss = ce" + (f" + {cfg.zloss_weight:g}·zloss" if cfg.zloss_weight else "")
                  + (f" + {cfg.next_embed_weight:g}·next_embed({cfg.next_embed_kind})" if cfg.next_embed_weight else "")
                  + (f" · masking {cfg.mask_prob:g} ({cfg.mask_mode})" if cfg.mask_prob else "")
                  + " · the first step compiles kernels (tens of seconds)")

    sampler = None   # built (and compiled) only when a sample is asked for; it reads the live weights

    def sample_text(n: int) -> str:
        nonlocal sampler
        if sampler is None:
            from tinyar.sample import Sampler
            sampler = Sampler(trainer.model)
        return sampler.generate("\n", n, temperature=0.8, top_k=40, seed=cfg.seed)
    saved_step = trainer.step if meta is not None else None

    def save(t: Trainer) -> None:
        nonlocal saved_step
        ckpt.save(out, t.step, t.state_arrays(), t.state_meta() | run_meta, keep=keep)
        saved_step = t.step

    resume_cmd = command_line("train", "--resume", str(out), *(["--device", device] if device else []),
                              *(["--keep", str(keep)] if keep != 3 else []))
    t0, last_train, last_val = time.perf_counter(), None, None
    tables = (Table(*TRAIN_HEADERS, title="training"), Table(*VAL_HEADERS, title="validation"))
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[tok_s]}"), console=console)
    task = progress.add_task("train", total=cfg.steps, completed=trainer.step, tok_s="compiling…")
    live = Live(Group(*tables, progress), console=console, refresh_per_second=4) if console.is_terminal else None
    stop = StopOnSignal()
    try:
        with stop, (live or nullcontext()), open(out / ckpt.METRICS, "a") as metrics:
            try:
                cached = set()
                for row in train_loop(trainer, data, on_checkpoint=save, should_stop=stop):
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                    if row["kind"] not in cached:   # the train (or eval) kernels now exist: keep them
                        cached.add(row["kind"])
                        kernel_cache.save()
                    if row["kind"] == "train":
                        last_train, cols = row, train_columns(cfg, row)
                        progress.update(task, completed=row["step"], tok_s=f"{row['tok_s']:,.0f} tok/s")
                        tables[0].add_row(*cols)
                        if live is None:
                            console.print("  ".join(f"{h} {c}" for h, c in zip(TRAIN_HEADERS, cols)), soft_wrap=True)
                    else:
                        last_val, cols = row, val_columns(row)
                        tables[1].add_row(*cols)
                        if live is None:
                            console.print("val  " + "  ".join(f"{h} {c}" for h, c in zip(VAL_HEADERS, cols)),
                                          soft_wrap=True)
                        if eval_sample_tokens > 0:
                            text = sample_text(eval_sample_tokens)
                            console.print(f"sample @ {row['step']}: {text!r}", markup=False, highlight=False,
                                          soft_wrap=True)
            except Diverged:
                raise
            except Exception:
                if not stop():
                    raise
                # e.g. Ctrl-C in a terminal also killed the compiler tinygrad was running: this step
                # never finished, and its half-applied update must not be saved
                stop.unfinished = True
            if stop() and not stop.unfinished and trainer.step > 0 and trainer.step != saved_step:
                save(trainer)
    except Diverged as e:
        fail(divergence_message(e, cfg, out, corpus, ckpt.latest(out) if saved_step is not None else None), code=1)
    except ckpt.CheckpointError as e:
        fail(str(e), code=1)
    except KeyboardInterrupt:
        good = ckpt.latest(out)
        fail(f"stopped at once by a second signal; step {trainer.step} was not saved"
             + (f"; resume from {good.name} with: {resume_cmd}" if good else ""), code=128 + (stop.signum or 2))

    if stop():
        click.echo(stop_message(stop, trainer.step, cfg.steps, ckpt.latest(out), resume_cmd), err=True)
        sys.exit(128 + stop.signum)

    elapsed = time.perf_counter() - t0
    if last_train:
        console.print(f"[bold]done[/] {trainer.step} steps in {elapsed:.0f} s · final total {last_train['total']:.4f}"
                      + (f" · val ce {last_val['val_ce']:.4f} ({last_val['val_bpb']:.3f} bits/byte)" if last_val else "")
                      + f" · checkpoint {ckpt.latest(out)}")
        from tinyar.plot import PlotError, read_metrics, render_summary
        try:   # the whole history in the folder, resumed parts included
            console.print(render_summary(read_metrics(out).rows))
            console.print(f"[dim]all curves: python cli.py plot {out}[/]", soft_wrap=True)
        except PlotError:
            pass
    if sample_tokens > 0:
        try:
            text = sample_text(sample_tokens)
        except KeyboardInterrupt:
            fail(f"sampling interrupted; the run itself is complete: {ckpt.latest(out)}", code=130)
        console.print(Panel(Text(text), title="sample (temperature 0.8, top-k 40)", expand=False)) \
            if console.is_terminal else console.print("sample:\n" + text, markup=False, highlight=False)


@cli.command()
def devices():
    """Which tinygrad backends work here, why the others don't, and the default."""
    from tinyar.devices import backend_table, default_device
    table = Table("device", "works", "why not / what to install", title="tinygrad backends")
    for r in backend_table():
        table.add_row(r["device"], "[green]yes[/]" if r["works"] else "[red]no[/]",
                      f"{r['reason']} — {r['hint']}" if r["reason"] else "")
    console.print(table)
    try:
        console.print(f"train picks: [bold]{default_device()}[/] (set DEV=... or --device to change; "
                      f"several devices of one kind, e.g. --device CUDA:0,CUDA:1, train data-parallel)")
    except Exception as e:
        console.print(f"no default device: {e}")


@cli.command()
@config_options
@click.option("--device", default=None, help="tinygrad device [default: DEV or tinygrad's pick]")
@click.option("--timed-steps", type=int, default=10, show_default=True, help="steady steps timed (median)")
@click.option("--vs-torch", is_flag=True, help="same model and losses in x-transformers (PyTorch), interleaved")
@click.option("--torch-threads", type=int, default=None, help="PyTorch CPU threads [default: torch's]")
@click.option("--components", is_flag=True, help="time CE only, each loss component alone, and all")
@click.option("--beam", type=click.IntRange(0, 16), default=0, show_default=True,
              help="BEAM search width for kernels: faster steps, minutes of search once per shape")
@click.option("--json", "as_json", is_flag=True, help="print the numbers as JSON")
def bench(device, timed_steps, vs_torch, torch_threads, components, beam, as_json, **fields):
    """Time training steps: first (compile) step, steady step, tokens/s, FLOP/s, memory."""
    from tinyar import bench as B, kernel_cache
    from tinyar.devices import DeviceError, check_dtype, use_device
    try:
        dev = use_device(device)
        cfg = Config().replace(**{k: v for k, v in fields.items() if v is not None}).validate()
        check_dtype(cfg.dtype, dev)
    except (ConfigError, DeviceError) as e:
        fail(str(e))
    if timed_steps < 1:
        fail("--timed-steps must be at least 1")
    kernel_cache.enable()
    B.set_beam(beam)
    with console.status("bench") as status:
        res = B.run(cfg, timed_steps, vs_torch, components, torch_threads, on_status=status.update,
                    devices=dev if isinstance(dev, tuple) else None)
    kernel_cache.save()
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    mb = lambda b: "?" if b is None else f"{b / 2**20:,.0f}"
    title = (f"{cfg.dim}d×{cfg.depth}L×{cfg.heads}h, T {cfg.seq_len}, B {cfg.batch_size}, "
             f"{B.model_flops(cfg) / 1e9:.2f} GFLOP/step"
             + (" · tinyar with ce only, each component alone, all" if components else f" · loss {B.loss_settings(cfg)}")
             + (f" · BEAM={beam}" if beam else "") + (f" · {cfg.dtype} matmuls" if cfg.dtype != "float32" else ""))
    table = Table("run", "device", "1st step", "step", "tokens/s", "GFLOP/s", "vs torch", "RSS MB", title=title)
    for r in res["rows"]:
        table.add_row(r["name"].removeprefix("tinyar ") if components and r["name"] != "x-transformers" else r["name"],
                      r["device"].replace(" CPU×", " ×"), f"{r['first_s']:.1f} s", f"{r['step_s'] * 1e3:,.0f} ms",
                      f"{r['tokens_per_s']:,.0f}", f"{r['flops_per_s'] / 1e9:.2f}",
                      "" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}×",
                      mb(r["peak_rss"]) + ("" if r["buffers"] is None else f" ({mb(r['buffers'])})"))
    wide = console if console.is_terminal else Console(width=max(console.width, 112))  # piped: one line per row
    wide.print(table)
    wide.print(f"numpy float32 1024² matmul here: {res['numpy_flops'] / 1e9:.1f} GFLOP/s · step: median of "
               f"{timed_steps}, interleaved · first step: trace + plan + generate + compile + run (seconds "
               f"once caches are warm) · RSS MB: peak growth while building + 2 steps (tinygrad buffers)"
               + ("" if res["torch"] is None else f" · x-transformers: {res['torch']}"))


# ── assignments: hand out stubs, grade submissions (tinyar/assignments/) ────────────────────

@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("assignment"), show_default=True,
              help="folder for the student's workspace")
@click.option("--solution", is_flag=True, help="write the answer key (the reference bodies) instead of stubs")
@click.option("--force", is_flag=True, help="overwrite an existing tasks.py")
def assign(out, solution, force):
    """Write a fresh assignment workspace: OUT/tasks.py with every task stubbed."""
    from tinyar.assignments.tasks import MAX_POINTS, TASKS, TaskMarkerError, make_tasks_file
    target = out / "tasks.py"
    if target.exists() and not force:
        fail(f"{target} already exists (a student's work?); pass --force to overwrite it")
    try:
        text = make_tasks_file(solution)
        out.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except TaskMarkerError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {target}: {e.strerror}")
    console.print(f"wrote {target}: {'the answer key' if solution else 'stubs'} for {len(TASKS)} tasks, "
                  f"{MAX_POINTS} points · grade it with: python cli.py grade {target}")


GRADE_STYLE = {"passed": "green", "failed": "red", "not implemented": "yellow"}


def grade_table(sub: dict) -> Table:
    table = Table("task", "status", "points", "reason", title=Text(f"{sub['submission']}: {sub['score']}/{sub['max_score']}"))
    for r in sub["tasks"]:
        reason = r["reason"].removeprefix(f"{r['task']}: ")   # a stub's message starts with the task id
        table.add_row(r["task"], Text(r["status"], style=GRADE_STYLE[r["status"]]),
                      f"{r['points']}/{r['max_points']}", Text(reason))
    return table


def student_name(sub: Path) -> str:
    """alice.py -> alice; bob/tasks.py -> bob."""
    return sub.parent.name if sub.name == "tasks.py" else sub.stem


def class_table(results: list[dict], path: Path) -> Table:
    """One line per submission: score, how many tasks are not done, the failed ones and why."""
    table = Table(title=Text(f"{path}: {len(results)} submissions"), expand=True)
    for name in ("student", "score", "not done"):
        table.add_column(name, no_wrap=True)
    table.add_column("failed (first reason)", no_wrap=True, overflow="ellipsis", ratio=1)
    for sub in results:
        failed = [r for r in sub["tasks"] if r["status"] == "failed"]
        todo = sum(r["status"] == "not implemented" for r in sub["tasks"])
        table.add_row(Text(student_name(Path(sub["submission"]))), f"{sub['score']}/{sub['max_score']}",
                      "all" if todo == len(sub["tasks"]) else str(todo),
                      Text(", ".join(r["task"] for r in failed) + f" ({failed[0]['reason']})", style="red")
                      if failed else "")
    return table


def grade_summary(sub: dict) -> str:
    counts = {s: sum(r["status"] == s for r in sub["tasks"]) for s in GRADE_STYLE}
    return f"score {sub['score']}/{sub['max_score']} · " + " · ".join(f"{n} {s}" for s, n in counts.items())


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--reference", is_flag=True, help="grade the library's own solutions (checks the grader itself)")
@click.option("--task", "-t", "tasks", multiple=True, help="grade only this task (repeatable)")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="seconds each task may take")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="tasks graded at the same time")
@click.option("--seed", type=int, default=0, show_default=True,
              help="other random shapes and values for the checks (catches answers fitted to the default ones)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (for a course's grading system)")
@click.option("--device", default=None, help="tinygrad device the checks run on [default: DEV or tinygrad's pick]")
def grade(path, reference, tasks, timeout, jobs, seed, as_json, device):
    """Grade a student's tasks.py (default: ./tasks.py), a workspace folder, or a folder of
    submissions (one .py file or one folder with tasks.py each). Exit 0 only if all pass."""
    import os
    from tinyar.assignments.tasks import BY_ID
    from tinyar.assignments.grade import find_submissions, grade as run_grade
    if unknown := [t for t in tasks if t not in BY_ID]:
        fail(f"no task {unknown[0]!r}; the tasks are {', '.join(BY_ID)}")
    if timeout <= 0 or jobs < 1:
        fail("--timeout must be > 0 and --jobs >= 1")
    if reference:
        subs, single = [None], True
    else:
        path = path or Path("tasks.py")
        if not path.exists():
            fail(f"{path} does not exist; give the student's file or folder, e.g. python cli.py grade hw1/tasks.py")
        if path.is_file() and path.suffix != ".py":
            fail(f"{path} is not a Python file; give the student's tasks.py or a folder of submissions")
        subs, single = find_submissions(path), path.is_file() or (path / "tasks.py").is_file()
        if not subs:
            fail(f"{path} holds no submissions (.py files, or folders with a tasks.py)")
    if device:
        os.environ["DEV"] = device   # the graders' processes inherit it
    progress = Progress(TextColumn("[bold]grading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[now]}"),
                        console=Console(stderr=True), transient=True, disable=as_json or not console.is_terminal)
    with progress:
        bar = progress.add_task("grade", total=len(subs) * (len(tasks) or len(BY_ID)), now="")
        done = lambda sub, r: progress.update(bar, advance=1, now=f"{sub.name if sub else 'reference'}: {r['task']}")
        results = run_grade(subs, list(tasks) or None, timeout, jobs, seed, on_result=done)
    if as_json:
        click.echo(json.dumps(results[0] if single else results, indent=2))
    elif single:
        console.print(grade_table(results[0]))
        console.print(grade_summary(results[0]))
    else:
        console.print(class_table(results, path))
        console.print("reasons in full: python cli.py grade <one submission>, or --json for everything")
    sys.exit(0 if all(r["status"] == "passed" for sub in results for r in sub["tasks"]) else 1)


@cli.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--metric", default=None, help="draw only this metric (several runs: default ce); "
              "an unknown name lists the available ones")
@click.option("--x", "xaxis", type=click.Choice(["step", "tokens"]), default="step", show_default=True,
              help="x axis (tokens compares runs of different batch sizes)")
@click.option("--height", type=click.IntRange(3, 60), default=8, show_default=True, help="lines per panel")
@click.option("--png", type=click.Path(path_type=Path), default=None, help="also write the chart as a PNG image "
              "(needs matplotlib: pip install -e '.[plot]')")
def plot_cmd(runs, metric, xaxis, height, png):
    """Loss curves of RUNS (run folders): one panel per component, or one metric overlaid."""
    from tinyar.plot import PlotError, read_metrics, render, require_matplotlib, save_png
    try:
        if png is not None:
            require_matplotlib()   # before drawing anything
        loaded = [read_metrics(r) for r in runs]
        for run in loaded:
            for note in run.skipped:
                click.echo(f"note: {run.name}: {note}", err=True)
        console.print(render(loaded, metric, x=xaxis, height=height))
        if png is not None:
            w, h = save_png(loaded, png, metric, x=xaxis)
            console.print(f"wrote {png} ({w}×{h} pixels)")
    except PlotError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {png}: {e.strerror}")


def read_prompt_file(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as e:
        fail(f"cannot read --prompt-file {name}: {e.strerror}")


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--prompt", default="\n", show_default="a newline", help="text to continue")
@click.option("--prompt-file", default=None, metavar="PATH",
              help="continue this file's raw bytes instead of --prompt ('-' reads stdin)")
@click.option("--max-new-tokens", type=int, default=200, show_default=True, help="bytes to generate at most")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="divides the logits; 0 = greedy")
@click.option("--greedy", is_flag=True, help="always take the most likely byte (same as --temperature 0)")
@click.option("--top-k", type=int, default=None, help="keep only the k most likely bytes")
@click.option("--top-p", type=float, default=None, help="keep the most likely bytes up to this total probability")
@click.option("--min-p", type=float, default=None, help="keep bytes at least this fraction as likely as the best")
@click.option("--stop", default=None, help="stop when this text appears (it is not printed)")
@click.option("--seed", type=int, default=None, help="same seed, same text [default: random, printed at the end]")
@click.option("--no-cache", is_flag=True, help="re-run the whole context for every byte (slower, same text)")
@click.option("--slide", type=int, default=None,
              help="when the context is full, drop this many oldest bytes [default: seq_len/2; 1 = nanoGPT's window]")
@click.option("--compare-cache", is_flag=True, help="generate with and without the KV cache; print both speeds")
@click.option("--device", default=None, help="tinygrad device, e.g. CPU, CL, CUDA, METAL [default: DEV or tinygrad's pick]")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="matmul precision (the checkpoint holds float32 weights, whatever dtype trained it)")
def sample(run, prompt, prompt_file, max_new_tokens, temperature, greedy, top_k, top_p, min_p, stop, seed,
           no_cache, slide, compare_cache, device, dtype):
    """Continue a prompt with the newest checkpoint in the run folder RUN, streaming the text."""
    import secrets

    from tinyar import kernel_cache
    from tinyar.checkpoint import CheckpointError
    from tinyar.devices import DeviceError, check_dtype, use_device
    from tinyar.sample import SampleError, Sampler, check_settings, compare_cache as compare, load_model, to_bytes

    seed = secrets.randbelow(2**31) if seed is None else seed
    settings = dict(temperature=0.0 if greedy else temperature, top_k=top_k, top_p=top_p, min_p=min_p, stop=stop)
    try:
        check_settings(**settings)
        if max_new_tokens < 1:
            fail(f"--max-new-tokens must be at least 1 (got {max_new_tokens})")
        data = read_prompt_file(prompt_file) if prompt_file else to_bytes(prompt)
        if not data:
            fail(f"the prompt {'file ' + prompt_file + ' ' if prompt_file else ''}is empty; "
                 f"give at least one character, e.g. --prompt $'\\n'")
        check_dtype(dtype, use_device(device))
        kernel_cache.enable()  # a second `sample` of the same model shape starts in seconds
        model, path = load_model(run, dtype)
        sampler = Sampler(model, cache=not no_cache, slide=slide)
        if compare_cache:
            speeds = compare(model, data, max_new_tokens, slide=slide, seed=seed, **settings)
            click.echo(f"{max_new_tokens} new tokens, seq_len {model.cfg.seq_len}, slide {sampler.window.slide}: "
                       f"{speeds['cache']:,.1f} tok/s with the KV cache, {speeds['no cache']:,.1f} tok/s without "
                       f"({speeds['cache'] / speeds['no cache']:.1f}x); same text: {speeds['same']}")
            return
        click.echo(data.decode("utf-8", errors="replace"), nl=False, color=False)
        t0 = time.perf_counter()
        for piece in sampler.stream(data, max_new_tokens, seed=seed, **settings):
            click.echo(piece, nl=False)  # echo flushes, so the text streams
        click.echo("")
    except (SampleError, CheckpointError, DeviceError) as e:
        fail(str(e))
    n, took = len(sampler.tokens), time.perf_counter() - t0
    click.echo(f"[{n} tokens in {took:.1f} s (compiling included) · seed {seed} · "
               f"{'no cache' if no_cache else f'KV cache, slide {sampler.window.slide}'} · {path.name}]", err=True)


if __name__ == "__main__":
    cli()
