"""The screen of `python cli.py train`: rows printed as they come, one live line at the bottom.

Each row is printed once and scrolls up like any terminal output; only the progress line below
it is redrawn. So the newest rows, the validation rows and the progress line stay visible at
any terminal height and any run length (a live table taller than the terminal gets cut by
Rich and looks frozen). Until a kind of step has run once, the live line says what tinygrad is
doing and counts the seconds. Piped (not a terminal): the same rows as plain lines, no live line.
"""
from __future__ import annotations

import math
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
from rich.text import Text

from tinyar.config import Config

# measured on the busy 2-core development machine (README "The first step"): the first step of
# the default `python cli.py train` (CL), fresh process; cold = tinygrad's, tinyar's and PoCL's
# caches empty (91 s), warm = the same command again (3.3 s)
FIRST_STEP_S = {"cold": 90, "warm": 3}


def fmt(x: float | None) -> str:
    if x is None:
        return "off"
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def zloss_floor(cfg: Config) -> float:
    """The z-loss of attention whose logits are all 0: position i's softmax over i+1 keys has
    log-sum-exp ln(i+1), summed over layers, squared, summed over heads, averaged over i.
    A fresh model's logits are near 0, so its z-loss starts here (1,018.5 for the default
    Config; its first logged value was 1,018.53)."""
    return sum(cfg.heads * (cfg.depth * math.log(i + 1)) ** 2 for i in range(cfg.seq_len)) / cfg.seq_len


def zloss_note(cfg: Config) -> str:
    """The legend under the header: what the z-loss column means for this run."""
    floor = f"{zloss_floor(cfg):,.0f}"
    if cfg.zloss_weight > 0:
        return (f"z-loss: trained at weight {cfg.zloss_weight:g} (z·w is its share of total)\n"
                f"  starts near {floor} (uniform attention); it should level off, not keep climbing")
    return (f"z-loss*: watched, not trained (--zloss 0); to train it: --zloss 1e-4\n"
            f"  starts near {floor} (uniform attention), grows as it sharpens; fine if ce falls")


def train_columns(cfg: Config) -> list[tuple[str, int, object]]:
    """(header, width, row -> text) of the training rows, in order. The z-loss column is always
    there (it is always computed); it is marked z-loss* when it is watched, not trained."""
    z_on, ne_on = cfg.zloss_weight > 0, cfg.next_embed_weight > 0
    return [("step", 5, lambda r: str(r["step"])), ("total", 6, lambda r: fmt(r["total"])),
            ("ce", 6, lambda r: fmt(r["ce"])), ("z-loss" if z_on else "z-loss*", 9, lambda r: fmt(r["zloss"])),
            ("z·w", 6, lambda r: fmt(cfg.zloss_weight * r["zloss"] if z_on else None)),
            ("next-emb", 8, lambda r: fmt(r["next_embed"] if cfg.use_next_embed else None)),
            ("ne·w", 6, lambda r: fmt(cfg.next_embed_weight * r["next_embed"] if ne_on else None)),
            ("|grad|", 6, lambda r: fmt(r["grad_norm"])), ("lr", 8, lambda r: f"{r['lr']:.2e}"),
            ("tok/s", 7, lambda r: f"{r['tok_s']:,.0f}")]


def val_text(row: dict) -> str:
    return (f"validation @ step {row['step']}: val ce {fmt(row['val_ce'])} · perplexity {fmt(row['val_ppl'])} · "
            f"{row['val_bpb']:.3f} bits/byte")


class StatusColumn(ProgressColumn):
    """tok/s once steps run; before that, what tinygrad is doing and the seconds it has taken."""

    def __init__(self, screen: "TrainScreen"):
        super().__init__()
        self.screen = screen

    def render(self, task) -> Text:
        s = self.screen
        if s.busy is None:
            return Text(s.speed)
        what, since = s.busy
        new = s.kernels() - s.kernels_at
        return Text(f"{what}{f' ({new} new kernels)' if new else ''} · {time.monotonic() - since:.0f} s",
                    style="yellow")


class TrainScreen:
    """with TrainScreen(console, cfg, step): ... screen.row(row) for each row of train.train."""

    def __init__(self, console: Console, cfg: Config, step: int):
        self.console, self.cfg, self.live = console, cfg, console.is_terminal
        self.columns = train_columns(cfg)
        if self.live:   # in a terminal, columns that only say "off" are left out (the header says why)
            off = {"z·w": cfg.zloss_weight == 0, "next-emb": not cfg.use_next_embed, "ne·w": cfg.next_embed_weight == 0}
            self.columns = [c for c in self.columns if not off.get(c[0])]
        self.speed, self.val_seen, self.rows_since_header = "", False, None
        # until the first row: tinygrad traces, plans, generates and compiles the step's kernels
        self.busy = (f"step {step + 1}: compiling", time.monotonic())
        self.kernels_at = self.kernels()
        self.progress = Progress(BarColumn(bar_width=16), MofNCompleteColumn(),
                                 TimeRemainingColumn(), StatusColumn(self), console=console, disable=not self.live)
        self.task = self.progress.add_task("train", total=cfg.steps, completed=step)

    @staticmethod
    def kernels() -> int:
        """How many kernels tinygrad has generated in this process (its in-memory code cache)."""
        import tinygrad.codegen
        return len(tinygrad.codegen.to_program_cache)

    def __enter__(self) -> "TrainScreen":
        self.console.print(Text(zloss_note(self.cfg), style="dim"), soft_wrap=not self.live)
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def header(self) -> None:
        self.console.print(Text(" ".join(h.rjust(w) for h, w, _ in self.columns), style="bold"))
        self.rows_since_header = 0

    def say(self, text: str | Text) -> None:
        """A line above the live line (sample text, notes)."""
        self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def working(self, what: str | None) -> None:
        """Show `what` with a seconds counter in the live line (None: back to tok/s)."""
        self.busy = (what, time.monotonic()) if what else None
        self.kernels_at = self.kernels()

    def row(self, row: dict) -> None:
        cfg = self.cfg
        if row["kind"] == "train":
            cells = [(h, w, f(row)) for h, w, f in self.columns]
            if self.live:
                if self.rows_since_header is None or self.rows_since_header >= 20:
                    self.header()
                self.console.print(" ".join(c.rjust(w) for _, w, c in cells), highlight=False)
                self.rows_since_header += 1
            else:
                self.console.print("  ".join(f"{h} {c}" for h, _, c in cells), soft_wrap=True, highlight=False)
            self.speed = f"{row['tok_s']:,.0f} tok/s"
            self.progress.update(self.task, completed=row["step"])
            validating = row["step"] % cfg.eval_every == 0 or row["step"] == cfg.steps
            self.working(None if not validating else "validating" if self.val_seen else "validation: compiling")
        else:
            self.val_seen = True
            self.working(None)
            self.console.print(Text(val_text(row), style="cyan" if self.live else ""), soft_wrap=not self.live)
            if self.live:
                self.rows_since_header = None   # a fresh header under each validation
        self.progress.refresh()
