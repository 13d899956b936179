"""A line chart for the terminal as a Rich renderable, in braille dots: no extra dependency.

Each character cell is a 2×4 grid of dots (U+2800 + one bit per dot), so a chart 80 cells
wide has 160 points across and 4 per row. Lines are drawn dot by dot between consecutive
points; a cell takes the colour of the last curve through it. Markers (validation points)
replace their cell with a solid dot. Without a UTF-8 console it falls back to '*' and 'o'.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.console import Console, ConsoleOptions, Group
from rich.measure import Measurement
from rich.panel import Panel
from rich.text import Text

MARK = "●"
# bit of the dot at [row % 4, column % 2] inside a braille cell
DOT_BIT = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]])


@dataclass
class Curve:
    label: str
    x: np.ndarray          # (N,) positions on the x axis
    y: np.ndarray          # (N,) finite values
    color: str             # a Rich colour
    points: bool = False   # a marker at each point instead of a line


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> np.ndarray:
    """About n round numbers (1, 2 or 5 × 10^k apart) inside [lo, hi]; whole numbers if integer."""
    if hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / (n - 1)
    step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)), key=lambda s: abs(s - raw))
    step = max(step, 1.0) if integer else step
    return np.arange(math.ceil(lo / step) * step, hi + step * 1e-9, step)


def si(v: float) -> str:
    """Short label: 12345 -> '12.3k', 0.00031 -> '0.00031'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


class Chart:
    """Curves on one pair of axes inside a Panel, as wide as Rich lets it be.

    log: log10 y axis. x2: a second x axis printed under the first, x2 = x × this factor
    (tokens per step)."""

    def __init__(self, title: str, curves: list[Curve], *, height: int = 8, log: bool = False,
                 xlabel: str = "step", x2: float | None = None, x2label: str = "tokens"):
        assert curves and all(len(c.x) for c in curves), "a Chart needs at least one point"
        self.title, self.curves, self.height, self.log = title, curves, height, log
        self.xlabel, self.x2, self.x2label = xlabel, x2, x2label

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(30, options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        tf = np.log10 if self.log else np.asarray
        ys = tf(np.concatenate([c.y for c in self.curves]).astype(np.float64))
        lo, hi = float(ys.min()), float(ys.max())
        if hi - lo <= 1e-9 * max(1.0, abs(hi)):   # a flat line: centre it
            lo, hi = lo - 0.5, hi + 0.5
        labels = [si(10 ** v if self.log else v) for v in (hi, (lo + hi) / 2, lo)]
        gutter = max(map(len, labels + [self.xlabel, self.x2label])) + 1
        W, H = max(options.max_width - 4 - gutter - 1, 8), self.height   # cells; the panel border takes 4
        xs = np.concatenate([c.x for c in self.curves])
        x0, x1 = float(xs.min()), float(max(xs.max(), xs.min() + 1))
        # data -> dot coordinates: x in [0, 2W), y in [0, 4H) counted from the top
        px = lambda x: np.rint((np.asarray(x, np.float64) - x0) / (x1 - x0) * (2 * W - 1)).astype(int)
        py = lambda y: np.rint((hi - tf(np.asarray(y, np.float64))) / (hi - lo) * (4 * H - 1)).astype(int)
        bits, color, marks = self._raster(px, py, W, H)

        utf = (options.encoding or "utf-8").lower().startswith("utf")
        tick, corner, rule, line_key, mark = ("┤", "└", "─", "━", MARK) if utf else ("|", "+", "-", "-", "o")
        label_at = {0: labels[0], H // 2: labels[1], H - 1: labels[2]}
        lines = []
        for r in range(H):
            line = Text(f"{label_at.get(r, ''):>{gutter - 1}} {tick}", style="dim")
            for col in range(W):
                if (r, col) in marks:
                    line.append(mark, style=f"bold {marks[r, col]}")
                elif bits[r, col]:
                    line.append(chr(0x2800 + int(bits[r, col])) if utf else "*", style=color[r, col])
                else:
                    line.append(" ")
            lines.append(line)
        lines.append(Text(" " * gutter + corner + rule * W, style="dim"))
        ticks = nice_ticks(x0, x1, integer=True)   # x counts steps or tokens
        lines.append(self._axis(ticks, [si(t) for t in ticks], px, gutter, W, self.xlabel))
        if self.x2 is not None:
            lines.append(self._axis(ticks, [si(t * self.x2) for t in ticks], px, gutter, W, self.x2label))
        if len(self.curves) > 1:
            legend = {}   # one entry per label, in the first such curve's colour
            for c in self.curves:
                legend.setdefault(c.label, Text(f"{mark if c.points else line_key} {c.label}", style=c.color))
            lines.append(Text(" " * gutter).append(Text("  ").join(legend.values())))
        yield Panel(Group(*lines), title=self.title, title_align="left", expand=False)

    def _raster(self, px, py, W: int, H: int):
        """Dots of every line OR-ed into (H, W) braille bit masks, a colour per cell, and the
        marker cells {(row, col): colour}."""
        bits, color, marks = np.zeros((H, W), dtype=np.int64), np.full((H, W), "", dtype=object), {}
        for c in self.curves:
            X, Y = px(c.x), py(c.y)
            if c.points:
                marks.update({(y // 4, x // 2): c.color for x, y in zip(X, Y)})
                continue
            for xa, ya, xb, yb in zip(X, Y, np.append(X[1:], X[-1]), np.append(Y[1:], Y[-1])):
                n = max(abs(xb - xa), abs(yb - ya)) + 1   # one dot per step along the longer side
                for x, y in zip(np.rint(np.linspace(xa, xb, n)).astype(int), np.rint(np.linspace(ya, yb, n)).astype(int)):
                    bits[y // 4, x // 2] |= DOT_BIT[y % 4, x % 2]
                    color[y // 4, x // 2] = c.color
        return bits, color, marks

    @staticmethod
    def _axis(ticks: np.ndarray, labels: list[str], px, gutter: int, W: int, name: str) -> Text:
        """One line of tick labels under the plot, each centred on its column, none overlapping."""
        row, free = [" "] * (W + 1), 0   # free: first column a label may start at
        for col, lab in zip(px(ticks) // 2 + 1, labels):
            start = min(max(col - len(lab) // 2, 0), W + 1 - len(lab))
            if start >= free:
                row[start:start + len(lab)] = lab
                free = start + len(lab) + 1
        return Text(f"{name:>{gutter}}" + "".join(row), style="dim")
