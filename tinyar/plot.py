"""Loss curves from a run's metrics.jsonl, in the terminal and as a PNG.

`read_metrics` keeps what is valid in a log a run may have left half-written and says
what it skipped. `render` draws one panel per component, each on its own y scale (log when
the values span more than a decade), so a z-loss of 200 and a cross-entropy of 2 are both
readable; validation points are marked on the ce panel. Several runs overlay one metric.
The terminal chart is tinyar/termchart.py (Rich only); the PNG uses matplotlib, an extra.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tinyar.config import COMPONENTS, PIECES
from tinyar.run import METRICS as METRICS_FILE
from tinyar.termchart import Chart, Curve

TRAIN_METRICS = (*COMPONENTS, "grad_norm", "lr", "tok_s")
VAL_METRICS = ("val_ce", "val_ppl", "val_bpb")
METRICS = TRAIN_METRICS + VAL_METRICS
ABOUT = {"total": "total loss, as trained on", "ce": "cross-entropy (nats)", "zloss": "attention z-loss, raw",
         "next_embed": "next-embed loss, raw", "grad_norm": "gradient norm before clipping",
         "lr": "learning rate", "tok_s": "tokens per second", "val_ce": "validation cross-entropy (nats)",
         "val_ppl": "validation perplexity", "val_bpb": "validation bits per byte"}
PANELS = (*COMPONENTS, "grad_norm", "lr")   # `plot RUN`, one panel each
SUMMARY = PIECES                            # the end of `train`
VAL_OF = {"ce": "val_ce"}   # validation points marked on a training panel
TERM_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")   # one per run
PNG_WIDTH, PNG_PANEL, PNG_MARGIN, PNG_DPI = 8.0, 2.2, 1.0, 100      # inches; image = dpi × inches


class PlotError(ValueError):
    """Nothing to plot. The message says why and what to do."""


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Run:
    name: str
    rows: list[dict]                                    # valid rows, sorted by step
    skipped: list[str] = field(default_factory=list)    # what was left out, one line each

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps, tokens, values) where the metric is finite. -> three (N,) float arrays"""
        pts = [(r["step"], r["tokens"] if finite(r.get("tokens")) else math.nan, r[metric])
               for r in self.rows if finite(r.get(metric))]
        return tuple(np.array(col, dtype=np.float64) for col in zip(*pts)) if pts else (np.zeros(0),) * 3

    def available(self) -> list[str]:
        return [m for m in METRICS if len(self.series(m)[0])]

    def tokens_per_step(self) -> float | None:
        steps, tokens, _ = self.series("ce")
        return float(tokens[-1] / steps[-1]) if len(steps) and math.isfinite(tokens[-1]) else None


def from_rows(rows: list, name: str = "run") -> Run:
    """Keep well-formed rows; a later row for the same (kind, step) replaces an earlier one
    (a resumed run logs again the steps after its last checkpoint). Note non-finite values."""
    latest = {}
    for r in rows:
        if isinstance(r, dict) and r.get("kind") in ("train", "val") and isinstance(r.get("step"), int):
            latest[r["kind"], r["step"]] = r
    run = Run(name, sorted(latest.values(), key=lambda r: (r["step"], r["kind"])))
    if len(latest) < len(rows):
        run.skipped.append(f"{len(rows) - len(latest)} row(s) malformed or logged again by a resume")
    for m in METRICS:
        bad = [r["step"] for r in run.rows if m in r and not finite(r[m])]
        if bad:
            run.skipped.append(f"{m}: {len(bad)} non-finite value(s) not drawn (first at step {bad[0]})")
    return run


def read_metrics(path: str | Path) -> Run:
    """A run folder (or a metrics.jsonl file) -> Run. Lines that are not JSON are skipped and noted."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not path.exists():
        raise PlotError(f"{path} does not exist; give a run folder that `train` wrote (e.g. runs/default)")
    if not file.exists():
        raise PlotError(f"{path} has no metrics.jsonl; is it a run folder? `train` writes one there")
    lines = file.read_text(errors="replace").splitlines()
    rows, bad = [], []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += [i] if line.strip() else []
    run = from_rows(rows, str(path))
    if bad:
        why = "cut short: the run was stopped mid-write" if bad == [len(lines)] else "not JSON"
        run.skipped.insert(0, f"line {', '.join(map(str, bad[:5]))}{' …' if len(bad) > 5 else ''} skipped ({why})")
    if not run.rows:
        raise PlotError(f"{file} holds no metrics rows yet{' (' + run.skipped[0] + ')' if run.skipped else ''}; "
                        f"train for at least one log step and try again")
    return run


def choose(runs: list[Run], metric: str | None) -> tuple[list[str], list[str]]:
    """The metrics to draw, and a note for each default panel left out."""
    if metric is None and len(runs) == 1:
        have = {m: runs[0].series(m)[2] for m in PANELS if len(runs[0].series(m)[2])}
        notes = [f"{m} is 0 throughout (off): not drawn" for m, v in have.items() if not v.any()]
        if "total" in have and "ce" in have and np.array_equal(have["total"], have["ce"]):
            notes.insert(0, "total equals ce (no auxiliary loss is weighted in): not drawn")
            del have["total"]
        chosen = [m for m, v in have.items() if v.any()]
        if not chosen:
            raise PlotError(f"{runs[0].name} has no training rows to draw; pick one with --metric from: "
                            f"{', '.join(runs[0].available())}")
        return chosen, notes
    metric = metric or "ce"
    if metric not in METRICS:
        have = sorted({m for r in runs for m in r.available()}, key=METRICS.index)
        raise PlotError(f"unknown metric {metric!r}; available: {', '.join(have)}")
    for r in runs:
        if not len(r.series(metric)[0]):
            raise PlotError(f"{r.name} has no {metric} values; it has: {', '.join(r.available())}")
    return [metric], []


def wants_log(metric: str, y: np.ndarray) -> bool:
    """A log y axis when positive values span more than a decade (the schedule stays linear)."""
    return bool(metric != "lr" and y.min() > 0 and y.max() > 10 * y.min())


def curves(runs: list[Run], metric: str, x: str, colors, val_color) -> list[Curve]:
    """Each run's metric as a line, a colour per run; on the ce panel, validation ce as markers."""
    out = []
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        line = run.name if len(runs) > 1 else ("train" if metric in TRAIN_METRICS else metric)
        for m, label, points in ((metric, line, False),
                                 (VAL_OF.get(metric), "validation", True)):
            steps, tokens, y = run.series(m) if m else (np.zeros(0),) * 3
            if x == "tokens" and not np.isfinite(tokens).all():
                raise PlotError(f"{run.name} has rows without a token count; use --x step")
            if len(y):
                c = val_color if points and len(runs) == 1 else color
                out.append(Curve(label, tokens if x == "tokens" else steps, y, c, points))
    return out


def same_rate(runs: list[Run]) -> float | None:
    """Tokens per step shared by all runs (for a second x axis), else None."""
    rates = {r.tokens_per_step() for r in runs}
    return rates.pop() if len(rates) == 1 else None


def charts(runs: list[Run], metrics: list[str], *, x: str = "step", height: int = 8, about: bool = True):
    rate = same_rate(runs) if x == "step" else None
    out = []
    for m in metrics:
        cs = curves(runs, m, x, TERM_COLORS, "bold yellow")
        log = wants_log(m, np.concatenate([c.y for c in cs]))
        title = " · ".join([f"[bold]{m}[/]"] + [ABOUT[m]] * about + ["log scale"] * log)
        out.append(Chart(title, cs, height=height, log=log, xlabel=x, x2=rate))
    return out


def render(runs: list[Run], metric: str | None = None, *, x: str = "step", height: int = 8) -> RenderableType:
    """The chart of `plot`: one panel per component of one run, or one metric over several runs."""
    chosen, notes = choose(runs, metric)
    return Group(*charts(runs, chosen, x=x, height=height), *(Text(n, style="dim") for n in notes))


def render_summary(rows: list[dict]) -> RenderableType:
    """The short chart at the end of `train`: ce with validation points and each auxiliary loss
    that is on, two panels a row, 5 lines high."""
    run = from_rows(rows)
    chosen = [m for m in SUMMARY if run.series(m)[2].any()]
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in chosen[:2]:
        grid.add_column(ratio=1)
    panels = charts([run], chosen, height=5, about=False)
    for i in range(0, len(panels), 2):
        grid.add_row(*panels[i:i + 2])
    return grid


def require_matplotlib():
    """matplotlib's Figure, or a PlotError that says how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("--png needs matplotlib: pip install matplotlib (or pip install -e '.[plot]')") from None
    return Figure


def save_png(runs: list[Run], path: str | Path, metric: str | None = None, *, x: str = "step") -> tuple[int, int]:
    """The same panels as `render`, as an image PNG_WIDTH × (PNG_PANEL per panel + PNG_MARGIN)
    inches at PNG_DPI. -> (width, height) in pixels"""
    Figure = require_matplotlib()
    from matplotlib.ticker import LogFormatter
    chosen, _ = choose(runs, metric)
    size = (PNG_WIDTH, PNG_PANEL * len(chosen) + PNG_MARGIN)
    fig = Figure(figsize=size, dpi=PNG_DPI, layout="constrained")
    axes = fig.subplots(len(chosen), 1, sharex=True, squeeze=False)[:, 0]
    for ax, m in zip(axes, chosen):
        for c in curves(runs, m, x, [f"C{i}" for i in range(10)], "black"):
            ax.plot(c.x, c.y, "o" if c.points else "-", color=c.color, label=c.label, ms=4, lw=1.3)
        if wants_log(m, np.concatenate([line.get_ydata() for line in ax.lines])):
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter())   # 20, not 2×10¹
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        ax.set_title(f"{m} · {ABOUT[m]}", loc="left", fontsize=10)
        ax.grid(alpha=0.3)
        if len(ax.lines) > 1:   # one entry per label (every run's validation points share one)
            handles, labels = ax.get_legend_handles_labels()
            by_label = dict(zip(labels, handles))
            ax.legend(by_label.values(), by_label.keys(), fontsize=8)
    axes[-1].set_xlabel(x)
    fig.suptitle(" vs ".join(r.name for r in runs), fontsize=11)
    k = same_rate(runs)
    if x == "step" and k:
        axes[0].secondary_xaxis("top", functions=(lambda s: s * k, lambda t: t / k)).set_xlabel("tokens")
    fig.savefig(path, dpi=PNG_DPI)
    return round(size[0] * PNG_DPI), round(size[1] * PNG_DPI)
