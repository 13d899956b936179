"""tinyar's command line: `python cli.py train [CORPUS] --mlm 0.15 --zloss 1e-4`.

Thin on purpose: Click options, Rich output and one-line errors. The library does the work
and returns numbers (a training run: tinyar/run.py); this file turns them into tables.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from tinyar.checkpoint import CheckpointError
from tinyar.config import CHOICES, DTYPES, OPTIONS, TRAIN_ONLY, Config, ConfigError
from tinyar.data import CorpusError
from tinyar.run import Run, RunError, StopOnSignal
from tinyar.screen import FIRST_STEP_S, TrainScreen

console = Console()


def config_options(f=None, *, leave_out: tuple[str, ...] = ()):
    """One option per entry of config.OPTIONS (the one flag <-> field table), default from Config;
    `leave_out`: fields this command does not use."""
    if f is None:
        return lambda f: config_options(f, leave_out=leave_out)
    defaults = Config()
    for field, (name, help_) in reversed([item for item in OPTIONS.items() if item[0] not in leave_out]):
        if isinstance(getattr(defaults, field), bool):   # --grad-share/--no-grad-share; None when not given
            f = click.option(f"{name}/--no-{name[2:]}", field, default=None,
                             help=f"{help_} [default: {'on' if getattr(defaults, field) else 'off'}]")(f)
            continue
        typ = click.Choice(CHOICES[field]) if field in CHOICES else type(getattr(defaults, field))
        f = click.option(name, field, type=typ, default=None,
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


@click.group(cls=OneLineErrors)
def cli():
    """tinyar: train a tiny decoder and watch every loss component."""


def divergence_message(e, cfg: Config, out: Path, corpus: tuple[str, ...], good: Path | None,
                       suspect: Path | None = None) -> str:
    """Which number blew up at which step, what was kept, and what to change. `suspect`: the
    unverified checkpoint the run resumed from and diverged after, before saving one of its own."""
    from tinyar.checkpoint import fallback
    from tinyar.train import CHECKED
    values = " (" + ", ".join(f"{k} {e.row[k]:.4g}" for k in CHECKED) \
        + ")" if e.row else ""
    if suspect is not None and good is None:
        return (f"{e}{values}; nothing after it was saved. The checkpoint it resumed from, {suspect}, was written "
                f"before checksums and may be damaged: {fallback(suspect)}")
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
@click.option("--init-from", type=click.Path(path_type=Path), default=None,
              help="start from x-transformers weights: an export folder, a .safetensors state dict (with --heads) "
                   "or a torch.save'd .pt; the weights fix the model shape (README: Leaving for PyTorch)")
def train(corpus, device, out, resume, keep, force, sample_tokens, eval_sample_tokens, beam, init_from, **fields):
    """Train on CORPUS: files, folders (every file below, sorted), glob patterns, or - for stdin,
    read as one byte stream (default: this Python's standard-library sources).

    Ctrl-C or SIGTERM stops after the current step, saves a checkpoint and prints the command
    that resumes it. A resumed run remembers its corpus and settings; --steps (and --lr, the
    logging intervals ...) may change, the model shape may not."""
    from tinyar.devices import DeviceError

    # 1. settings: fresh, or the resumed run's checkpoint plus what is given now (tinyar/run.py);
    #    --init-from: the x-transformers weights fix the shape (tinyar/xt_io.py)
    given, init = {k: v for k, v in fields.items() if v is not None}, None
    if init_from is not None:
        from tinyar.export import ExportError
        from tinyar.xt_io import init_fields, init_model
        if resume is not None:
            fail("--init-from starts a new run and --resume continues one: pass only one of them")
        try:
            init, _ = init_model(init_from, given.get("heads"))
            given = init_fields(init.cfg, given)
        except ExportError as e:
            fail(str(e))
    try:
        run = Run.start_or_resume(given, corpus, out, resume, keep)
    except (RunError, ConfigError) as e:
        fail(str(e))
    run.init, run.init_from = init, init_from
    for name, n in (("--sample-tokens", sample_tokens), ("--eval-sample-tokens", eval_sample_tokens)):
        if n < 0:
            fail(f"{name} must be >= 0 (got {n}); 0 skips the sample")
    out = run.folder

    # 2. the run folder, then the corpus (stdin is copied into the run folder so a resume finds it)
    click.get_current_context().call_on_close(run.close)   # the folder's lock ends with the command
    try:
        run.open(force, sys.stdin.buffer, device)
    except RunError as e:
        fail(str(e))
    except (CorpusError, DeviceError) as e:
        remembered = resume is not None and not corpus and isinstance(e, CorpusError)
        fail(f"{e}" + (f" (the run's remembered corpus); pass it again: "
                       f"{command_line('train', 'CORPUS', '--resume', str(out))}" if remembered else ""))
    except OSError as e:
        fail(f"cannot copy stdin into {out}: {e.strerror}")
    if run.leftovers:
        console.print(f"note: removed {len(run.leftovers)} temp file(s) a crashed run left in {out}: "
                      f"{', '.join(p.name for p in run.leftovers)}", markup=False, highlight=False)
    data, meta = run.data, run.meta
    if meta is not None and meta.get("corpus_bytes", len(data)) != len(data):
        console.print(f"[yellow]note:[/] the corpus now has {len(data):,} bytes, the run was trained on "
                      f"{meta['corpus_bytes']:,}; continuing on the new one")

    # 3. everything that compiles kernels: clang's and PoCL's messages go to RUN/compiler.log
    from tinyar.compiler_log import CompilerLog
    with CompilerLog(out / COMPILER_LOG, append=meta is not None):
        train_and_show(run, device, keep, force, sample_tokens, eval_sample_tokens, beam)


COMPILER_LOG = "compiler.log"


def header_lines(cfg: Config, params: int, data_name: str, data_bytes: int, device: str, out: Path) -> list[str]:
    """The lines above the rows, each short enough for an 80-column terminal."""
    first = FIRST_STEP_S
    return [f"[bold]tinyar[/] {cfg.dim}d×{cfg.depth}L×{cfg.heads}h · {params:,} params · device {device}"
            + (f" · matmuls in {cfg.dtype}" if cfg.dtype != "float32" else ""),
            f"corpus {data_name} ({data_bytes:,} bytes) · run folder {out}",
            "loss = ce" + (f" + {cfg.zloss_weight:g}·zloss" if cfg.zloss_weight else "")
            + (f" + {cfg.next_embed_weight:g}·next_embed({cfg.next_embed_kind})" if cfg.next_embed_weight else "")
            + (f" · masking {cfg.mask_prob:g} ({cfg.mask_mode})" if cfg.mask_prob else ""),
            f"first step: tinygrad plans + compiles kernels (cached): ~{first['cold']:.0f} s new, "
            f"~{first['warm']:.0f} s cached"]


def done_lines(steps: int, elapsed: float, last: dict, last_val: dict | None, checkpoint: Path | None) -> list[str]:
    return [f"[bold]done[/] {steps} steps in {elapsed:.0f} s · total {last['total']:.4f}"
            + (f" · val ce {last_val['val_ce']:.4f} ({last_val['val_bpb']:.3f} bits/byte)" if last_val else ""),
            f"checkpoint {checkpoint}"]


def train_and_show(run: Run, device, keep, force, sample_tokens, eval_sample_tokens, beam) -> None:
    """Build the trainer, train with the screen of tinyar/screen.py, sample. Fails with one line."""
    from tinyar import kernel_cache
    from tinyar.bench import set_beam
    from tinyar.train import Diverged
    cfg, out, data, meta = run.cfg, run.folder, run.data, run.meta
    kernel_cache.enable()   # generated kernels from earlier runs: the first step takes seconds, not minutes
    if beam:
        set_beam(beam)
        console.print(f"[yellow]--beam {beam}:[/] the first steps search kernel schedules (minutes on a CPU; on "
                      f"PoCL's CL much longer); tinygrad caches the result, so later runs of this shape start fast")
    try:
        trainer = run.build(force)
    except RunError as e:
        fail(str(e))

    for line in header_lines(cfg, trainer.model.num_params(), data.name, len(data), run.device, out):
        console.print(line)
    if meta is not None:
        console.print(f"resuming from {run.path} (step {trainer.step} of {cfg.steps})"
                      + (f" · changed: {', '.join(run.changed)}" if run.changed else ""))
    elif run.init is not None:
        console.print(f"initialised from {run.init_from} (x-transformers weights; a fresh optimizer at step 0)"
                      + (f" · {', '.join(run.left_fresh)} start fresh" if run.left_fresh else ""), soft_wrap=True,
                      markup=False, highlight=False)

    sampler = None   # built (and compiled) only when a sample is asked for; it reads the live weights

    def sample_text(n: int) -> str:
        nonlocal sampler
        if sampler is None:
            from tinyar.sample import Sampler
            sampler = Sampler(trainer.model)
        return sampler.generate("\n", n, temperature=0.8, top_k=40, seed=cfg.seed)

    resume_cmd = command_line("train", "--resume", str(out), *(["--device", device] if device else []),
                              *(["--keep", str(keep)] if keep != 3 else []))
    t0, last = time.perf_counter(), {"train": None, "val": None}
    screen = TrainScreen(console, cfg, trainer.step)

    def show(row: dict) -> None:
        last[row["kind"]] = row
        screen.row(row)
        if row["kind"] == "val" and eval_sample_tokens > 0:
            screen.working("sample" if sampler else "sample: compiling")
            text = sample_text(eval_sample_tokens)
            screen.working(None)
            screen.say(f"sample @ {row['step']}: {text!r}")

    stop = StopOnSignal()
    try:
        with stop, screen:
            run.train(on_row=show, stop=stop)   # writes metrics.jsonl and the checkpoints
    except Diverged as e:
        fail(divergence_message(e, cfg, out, run.corpus, run.last_good(), run.path), code=1)
    except (CheckpointError, RunError) as e:
        fail(str(e), code=1)
    except KeyboardInterrupt:
        good = run.latest()
        fail(f"stopped at once by a second signal; step {trainer.step} was not saved"
             + (f"; resume from {good.name} with: {resume_cmd}" if good else ""), code=128 + (stop.signum or 2))

    if stop():
        click.echo(stop_message(stop, trainer.step, cfg.steps, run.latest(), resume_cmd), err=True)
        sys.exit(128 + stop.signum)

    if last["train"]:
        for line in done_lines(trainer.step, time.perf_counter() - t0, last["train"], last["val"], run.latest()):
            console.print(line)
        from tinyar.plot import PlotError, read_metrics, render_summary
        try:   # the whole history in the folder, resumed parts included
            console.print(render_summary(read_metrics(out).rows))
            console.print(f"[dim]all curves: python cli.py plot {out}[/]", soft_wrap=True)
        except PlotError:
            pass
    if sample_tokens > 0:
        try:
            if sampler is None:
                console.print("[dim]sampling (its kernels compile first)[/]")
            text = sample_text(sample_tokens)
        except KeyboardInterrupt:
            fail(f"sampling interrupted; the run itself is complete: {run.latest()}", code=130)
        console.print(Panel(Text(text), title="sample (temperature 0.8, top-k 40)", expand=False)) \
            if console.is_terminal else console.print("sample:\n" + text, markup=False, highlight=False)


@cli.command()
@click.option("--speed", is_flag=True, help="also time a 512² float32 matmul on each working backend "
              "(seconds each: each compiles it) and say which is fastest here")
def devices(speed):
    """Which tinygrad backends work here, why the others don't, and the default."""
    from tinyar.devices import backend_table, default_device, matmul_speed
    rows = backend_table()
    table = Table("device", "works", *(["matmul GFLOP/s"] if speed else []), "why not / what to install",
                  title="tinygrad backends")
    fastest = None
    for r in rows:
        gflops = ""
        if speed and r["works"]:
            r["gflops"] = matmul_speed(r["device"])
            gflops = f"{r['gflops']:,.1f}"
            fastest = r if fastest is None or r["gflops"] > fastest["gflops"] else fastest
        table.add_row(r["device"], "[green]yes[/]" if r["works"] else "[red]no[/]", *([gflops] if speed else []),
                      f"{r['reason']} — {r['hint']}" if r["reason"] else "")
    console.print(table)
    try:
        console.print(f"train picks: [bold]{default_device()}[/] (set DEV=... or --device to change; "
                      f"several devices of one kind, e.g. --device CUDA:0,CUDA:1, train data-parallel)")
    except Exception as e:
        console.print(f"no default device: {e}")
    if fastest:
        console.print(f"fastest here on a 512² matmul: [bold]{fastest['device']}[/] "
                      f"({fastest['gflops']:,.1f} GFLOP/s, best of 5)")
        console.print(f"a real training step there: python cli.py bench --device {fastest['device']}")
    elif not speed:
        console.print("[dim]which is fastest here: python cli.py devices --speed[/]")


def device_and_config(device: str | None, fields: dict) -> tuple:
    """`bench` and `tune`: the device (use_device) and the model Config from the flags given,
    checked together (the dtype must run there); a one-line error otherwise."""
    from tinyar.devices import DeviceError, check_dtype, use_device
    try:
        dev = use_device(device)
        cfg = Config().replace(**{k: v for k, v in fields.items() if v is not None}).validate()
        check_dtype(cfg.dtype, dev)
    except (ConfigError, DeviceError) as e:
        fail(str(e))
    return dev, cfg


@cli.command()
@config_options(leave_out=TRAIN_ONLY)
@click.option("--device", default=None, help="tinygrad device [default: DEV or tinygrad's pick]")
@click.option("--timed-steps", type=int, default=10, show_default=True, help="steady steps timed (median)")
@click.option("--vs-torch", is_flag=True, help="same model and losses in x-transformers (PyTorch), interleaved")
@click.option("--torch-threads", type=int, default=None, help="PyTorch CPU threads [default: torch's]")
@click.option("--components", is_flag=True, help="time CE only, each loss component alone, and all")
@click.option("--beam", type=click.IntRange(0, 16), default=0, show_default=True,
              help="BEAM search width for kernels: faster steps, minutes of search once per shape")
@click.option("--first-step", "first", is_flag=True,
              help="also time the first step in two fresh processes: cold (empty caches), then warm")
@click.option("--tuned/--untuned", default=True, show_default=True,
              help="use the tuned kernel tables (python cli.py tune), or tinygrad's default schedules")
@click.option("--json", "as_json", is_flag=True, help="print the numbers as JSON")
def bench(device, timed_steps, vs_torch, torch_threads, components, beam, first, tuned, as_json, **fields):
    """Time training steps: first (compile) step, steady step, tokens/s, FLOP/s, memory."""
    from tinyar import bench as B, kernel_cache
    dev, cfg = device_and_config(device, fields)
    if timed_steps < 1:
        fail("--timed-steps must be at least 1")
    kernel_cache.enable()
    B.set_beam(beam)
    with console.status("bench") as status:
        res = B.run(cfg, timed_steps, vs_torch, components, torch_threads, on_status=status.update,
                    devices=dev if isinstance(dev, tuple) else None, first=first,
                    device=None if isinstance(dev, tuple) else dev, tuned=tuned)
    kernel_cache.save()
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    mb = lambda b: "?" if b is None else f"{b / 2**20:,.0f}"
    title = (f"{cfg.dim}d×{cfg.depth}L×{cfg.heads}h, T {cfg.seq_len}, B {cfg.batch_size}, "
             f"{B.model_flops(cfg) / 1e9:.2f} GFLOP/step"
             + (" · tinyar with ce only, each component alone, all" if components else f" · loss {B.loss_settings(cfg)}")
             + (f" · BEAM={beam}" if beam else "") + (f" · {cfg.dtype} matmuls" if cfg.dtype != "float32" else "")
             + (f" · {res['tuned_kernels']} kernels with tuned options" if res["tuned_kernels"] else " · tinygrad's default schedules"))
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
    if res["first_step"]:
        f = res["first_step"]
        wide.print(f"first step of a fresh process: cold (empty caches) {f['cold_s']:.1f} s · warm {f['warm_s']:.1f} s")
    if res["rss_vs_torch"]:
        wide.print(f"peak RSS growth vs x-transformers: {res['rss_vs_torch']:.2f}×")


@cli.command()
@config_options(leave_out=TRAIN_ONLY)
@click.option("--device", default=None, help="tinygrad device [default: DEV or tinygrad's pick]")
@click.option("--minutes", type=click.FloatRange(0.5, 600), default=20.0, show_default=True,
              help="time limit for the search (the slowest kernels are searched first)")
@click.option("--per-kernel", type=click.FloatRange(5, 3600), default=60.0, show_default=True,
              help="seconds of search for one kernel at most")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="table to write [default: ~/.cache/tinyar/tuned/DEVICE-SHAPE.json, read by every run]")
@click.option("--ab-steps", type=click.IntRange(0, 100), default=6, show_default=True,
              help="steps timed afterwards, tinygrad's defaults vs the table, interleaved (0: skip)")
def tune(device, minutes, per_kernel, out, ab_steps, **fields):
    """Search kernel schedules for one model's training step, once, and keep them as data."""
    from tinyar import bench as B, kernel_cache, tuning
    dev, cfg = device_and_config(device, fields)
    if isinstance(dev, tuple):
        fail("tune one device at a time: the table then applies to each of them (--device CL)")
    from tinygrad import Device
    name = dev or Device.DEFAULT
    out = out or tuning.user_dir() / (f"{name.replace(':', '-')}-d{cfg.dim}L{cfg.depth}h{cfg.heads}"
                                      f"T{cfg.seq_len}B{cfg.batch_size}-{cfg.dtype}.json")
    kernel_cache.enable()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  console=console, transient=True) as bar:
        task = bar.add_task("tune", total=1.0)
        res = B.tune(cfg, name, minutes * 60, per_kernel, out, ab_steps,
                     on_status=lambda msg, frac: bar.update(task, description=msg, completed=frac))
    kernel_cache.save()
    table = Table("kernel", "launches", "default", "tuned", "ratio", "options",
                  title=f"{len(res['tuned'])} of {res['kernels']} kernels tuned on {name} ({res['new']} new) → {res['path']}")
    for key, r in sorted(res["tuned"].items(), key=lambda kv: -kv[1]["default_ms"] * kv[1]["launches"]):
        table.add_row(key[:10], str(r["launches"]), f"{r['default_ms']:.3f} ms", f"{r['tuned_ms']:.3f} ms",
                      f"{r['default_ms'] / r['tuned_ms']:.2f}×",
                      " ".join(f"{o.op.name}{o.axis}:{o.arg}" for o in r["opts"]))
    if res["tuned"]:
        console.print(table)
    else:
        console.print(f"no kernel of the {res['kernels']} beat tinygrad's defaults by 3% within the time limit "
                      f"(a longer --minutes searches more); {res['path']} lists none")
    if res["speedup"] is not None:
        d, t = (r["step_s"] * 1e3 for r in res["ab"])
        console.print(f"training step, median of {ab_steps} interleaved: tinygrad's defaults {d:,.0f} ms → "
                      f"tuned {t:,.0f} ms ([bold]{res['speedup']:.2f}×[/])")


# ── assignments: hand out stubs, grade submissions (tinyar/assignments/) ────────────────────

@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("assignment"), show_default=True,
              help="folder for the student's workspace")
@click.option("--solution", is_flag=True, help="write the answer key (the reference bodies) instead of stubs")
@click.option("--force", is_flag=True, help="overwrite an existing tasks.py")
@click.option("--assignment", "which", type=click.Choice(["loss", "decoder", "training"]), default="loss",
              show_default=True, help="1: the loss pieces · 2: the decoder · 3: the training loop")
def assign(out, solution, force, which):
    """Write a fresh assignment workspace: OUT/tasks.py with every task stubbed."""
    from tinyar.assignments.tasks import ASSIGNMENTS, TaskMarkerError, make_tasks_file
    target, tasks = out / "tasks.py", ASSIGNMENTS[which]
    if target.exists() and not force:
        fail(f"{target} already exists (a student's work?); pass --force to overwrite it")
    try:
        text = make_tasks_file(solution, which)
        out.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except TaskMarkerError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot write {target}: {e.strerror}")
    console.print(f"wrote {target}: {'the answer key' if solution else 'stubs'} for {len(tasks)} tasks "
                  f"of the {which} assignment, {sum(t.points for t in tasks)} points · "
                  f"grade it with: python cli.py grade {target}")


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
@click.option("--device", default=None, help="tinygrad device the checks run on [default: DEV, else CPU where "
              "clang is installed (the checks' tensors are tiny), else tinygrad's pick]")
def grade(path, reference, tasks, timeout, jobs, seed, as_json, device):
    """Grade a student's tasks.py (default: ./tasks.py), a workspace folder, or a folder of
    submissions (one .py file or one folder with tasks.py each). Exit 0 only if all pass."""
    import os
    from tinyar.assignments.tasks import ASSIGNMENTS, BY_ID, assignment_of
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
    if not device and not os.environ.get("DEV") and shutil.which("clang"):
        device = "CPU"               # tiny tensors: a GPU or OpenCL (PoCL) device only adds start-up and compile time
    if device:
        os.environ["DEV"] = device   # the graders' processes inherit it
    progress = Progress(TextColumn("[bold]grading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[now]}"),
                        console=Console(stderr=True), transient=True, disable=as_json or not console.is_terminal)
    with progress:
        per_sub = lambda s: len(tasks) or (len(BY_ID) if s is None else len(ASSIGNMENTS[assignment_of(s)]))
        bar = progress.add_task("grade", total=sum(per_sub(s) for s in subs), now="")
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
    from tinyar.checkpoint import fallback
    from tinyar.sample import (SampleError, Sampler, UnusableWeights, check_settings, compare_cache as compare,
                               load_model, to_bytes)

    seed = secrets.randbelow(2**31) if seed is None else seed
    settings = dict(temperature=0.0 if greedy else temperature, top_k=top_k, top_p=top_p, min_p=min_p, stop=stop)
    sampler = path = None
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
    except UnusableWeights as e:   # found at the first token, after the prompt was shown
        click.echo("")
        fail(f"{path}: {e}; {fallback(path)}")
    except (SampleError, CheckpointError, DeviceError) as e:
        fail(str(e))
    except KeyboardInterrupt:   # Ctrl-C: exit 130, as train does (not Click's "Aborted!" and 1)
        click.echo("")
        fail(f"interrupted (Ctrl-C) after {len(sampler.tokens) if sampler else 0} new tokens; --seed {seed} "
             f"repeats this text", code=130)
    n, took = len(sampler.tokens), time.perf_counter() - t0
    click.echo(f"[{n} tokens in {took:.1f} s (compiling included) · seed {seed} · "
               f"{'no cache' if no_cache else f'KV cache, slide {sampler.window.slide}'} · {path.name}]", err=True)

# ── export: leave for PyTorch (tinyar/export.py, tinyar/xt_io.py) ─────────────────────────

@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--to", "target", type=click.Choice(["x-transformers"]), default="x-transformers", show_default=True,
              help="the library to export to")
@click.option("--force", is_flag=True, help="OUT may exist: overwrite its model.safetensors, model.json and "
              "optimizer.safetensors")
@click.option("--verify", is_flag=True, help="load the export into x-transformers and compare its logits with "
              "tinyar's (needs PyTorch: pip install -e '.[parity]')")
def export(run, out, target, force, verify):
    """Export the newest checkpoint of the run folder RUN to OUT: the weights in x-transformers'
    names (OUT/model.safetensors), the exact constructor arguments (OUT/model.json) and AdamW's
    moments (OUT/optimizer.safetensors). No PyTorch needed, except for --verify."""
    from tinyar.export import ExportError, adam_moments, write_export
    from tinyar.interop import to_x_transformers
    from tinyar.xt_io import compare_logits, require_torch
    try:
        if verify:
            require_torch("--verify")   # before writing anything
        state, args = to_x_transformers(run)
        paths = write_export(out, state, args, force=force, moments=adam_moments(run))
    except ExportError as e:
        fail(str(e))
    a = args
    kw = lambda d: ", ".join(f"{k}={v!r}" for k, v in d.items())
    mb = paths[0].stat().st_size / 2**20
    console.print(f"wrote {paths[0]} ({len(state)} tensors, {mb:.1f} MB), {paths[1]} and {paths[2]} (AdamW's "
                  f"moments) · step {a['step']}",
                  soft_wrap=True, highlight=False)
    console.print(f"  TransformerWrapper({kw(a['TransformerWrapper'])}, attn_layers=Decoder({kw(a['Decoder'])}))\n"
                  f"  AutoregressiveWrapper(net, {kw(a['AutoregressiveWrapper'])})"
                  + (f", forward: {kw(a['forward'])}" if a["forward"] else ""), soft_wrap=True, highlight=False)
    for note in a["notes"]:
        console.print(f"note: {note}", soft_wrap=True, highlight=False, markup=False)
    if verify:
        diff = compare_logits(run, args, state)
        ok = diff < 1e-4
        console.print(f"verify: x-transformers' logits vs tinyar's on one batch: max relative difference {diff:.1e} "
                      f"({'ok' if ok else 'MISMATCH'})", highlight=False, soft_wrap=True)
        if not ok:
            sys.exit(1)
    console.print(f"continue in PyTorch: torchrun --nproc-per-node 2 tinyar/ddp_continue.py {out} CORPUS "
                  f"(README: Leaving for PyTorch)", soft_wrap=True, highlight=False, markup=False)


if __name__ == "__main__":
    cli()
