"""tinyar's command line: `python cli.py train [CORPUS] --mlm 0.15 --zloss 1e-4`.

Thin on purpose: the library returns numbers, this file turns them into Rich tables.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tinyar.config import Config, ConfigError
from tinyar.data import Corpus, CorpusError, default_corpus

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
]


def config_options(f):
    defaults = Config()
    for flag, field, typ, help_ in reversed(CONFIG_OPTIONS):
        f = click.option(flag, field, type=typ, default=None,
                         help=f"{help_} [default: {getattr(defaults, field)}]")(f)
    return f


def fail(msg: str) -> None:
    """One line on stderr, exit code 2, no traceback."""
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


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


@click.group()
def cli():
    """tinyar: train a tiny decoder and watch every loss component."""


@cli.command()
@click.argument("corpus", required=False)
@config_options
@click.option("--device", default=None, help="tinygrad device, e.g. CPU, CL, CPU:LLVM, CUDA, METAL [default: DEV or tinygrad's pick]")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run folder [default: runs/<corpus name>]")
@click.option("--resume", type=click.Path(path_type=Path), default=None, help="continue the run in this folder")
@click.option("--keep", type=int, default=3, show_default=True, help="checkpoints to keep")
@click.option("--force", is_flag=True, help="start over in an existing run folder")
@click.option("--sample-tokens", type=int, default=200, show_default=True, help="length of the final sample")
@click.option("--eval-sample-tokens", type=int, default=80, show_default=True,
              help="length of the one-line sample after each validation (0 = off)")
def train(corpus, device, out, resume, keep, force, sample_tokens, eval_sample_tokens, **fields):
    """Train on CORPUS (any file; default: this Python's standard-library sources)."""
    from tinyar import checkpoint as ckpt
    from tinyar.devices import DeviceError, use_device

    given = {k: v for k, v in fields.items() if v is not None}
    try:
        dev = use_device(device)
        meta, arrays = None, None
        if resume is not None:
            path = ckpt.latest(resume)
            if path is None:
                fail(f"no checkpoint in {resume}; start a new run without --resume")
            arrays, meta = ckpt.read_safetensors(path)
            cfg = Config.from_dict(meta["config"]).replace(**{k: v for k, v in given.items() if k == "steps"})
            out = resume
        else:
            cfg = Config().replace(**given)
        cfg.validate()
        name = Path(corpus).stem if corpus else "default"
        out = out or Path("runs") / name
        if resume is None and ckpt.latest(out) is not None and not force:
            fail(f"{out} already holds a run; continue it with --resume {out}, or pass --force to start over")
        data = Corpus(corpus, cfg.seq_len) if corpus else \
            Corpus(default_corpus(), cfg.seq_len, name="python stdlib sources")
    except (ConfigError, CorpusError, DeviceError, ckpt.CheckpointError) as e:
        fail(str(e))

    from tinyar.train import Trainer, train as train_loop
    try:
        trainer = Trainer(cfg, devices=dev if isinstance(dev, tuple) else None)
    except ValueError as e:
        fail(str(e))
    if meta is not None:
        try:
            trainer.load_state(arrays, meta)
        except ValueError as e:
            fail(f"{path}: {e}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create run folder {out}: {e.strerror}")
    if resume is None:
        (out / "metrics.jsonl").unlink(missing_ok=True)

    console.print(f"[bold]tinyar[/] {cfg.dim}d×{cfg.depth}L×{cfg.heads}h, {trainer.model.num_params():,} params · "
                  f"corpus {data.name} ({len(data):,} bytes) · device {dev} · run folder {out}")
    console.print(f"loss = ce" + (f" + {cfg.zloss_weight:g}·zloss" if cfg.zloss_weight else "")
                  + (f" + {cfg.next_embed_weight:g}·next_embed({cfg.next_embed_kind})" if cfg.next_embed_weight else "")
                  + (f" · masking {cfg.mask_prob:g} ({cfg.mask_mode})" if cfg.mask_prob else "")
                  + " · the first step compiles kernels (tens of seconds)")

    from tinyar.sample import Sampler
    sampler = Sampler(trainer.model)  # compiles on first use; then follows the weights as they train
    save = lambda t: ckpt.save(out, t.step, t.state_arrays(), t.state_meta(), keep=keep)
    t0, last_train, last_val = time.perf_counter(), None, None
    tables = (Table(*TRAIN_HEADERS, title="training"), Table(*VAL_HEADERS, title="validation"))
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        TextColumn("{task.fields[tok_s]}"), console=console)
    task = progress.add_task("train", total=cfg.steps, completed=trainer.step, tok_s="compiling…")
    live = Live(Group(*tables, progress), console=console, refresh_per_second=4) if console.is_terminal else None
    with (live or open("/dev/null")), open(out / "metrics.jsonl", "a") as metrics:
        for row in train_loop(trainer, data, on_checkpoint=save):
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
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
                    console.print("val  " + "  ".join(f"{h} {c}" for h, c in zip(VAL_HEADERS, cols)), soft_wrap=True)
                if eval_sample_tokens > 0:
                    text = sampler.generate("\n", eval_sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed)
                    console.print(f"sample @ {row['step']}: {text!r}", markup=False, highlight=False, soft_wrap=True)

    elapsed = time.perf_counter() - t0
    if last_train:
        console.print(f"[bold]done[/] {trainer.step} steps in {elapsed:.0f} s · final total {last_train['total']:.4f}"
                      + (f" · val ce {last_val['val_ce']:.4f} ({last_val['val_bpb']:.3f} bits/byte)" if last_val else "")
                      + f" · checkpoint {ckpt.latest(out)}")
    if sample_tokens > 0:
        text = sampler.generate("\n", sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed)
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
def sample(run, prompt, prompt_file, max_new_tokens, temperature, greedy, top_k, top_p, min_p, stop, seed,
           no_cache, slide, compare_cache, device):
    """Continue a prompt with the newest checkpoint in the run folder RUN, streaming the text."""
    import secrets

    from tinyar.checkpoint import CheckpointError
    from tinyar.devices import DeviceError, use_device
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
        use_device(device)
        model, path = load_model(run)
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
