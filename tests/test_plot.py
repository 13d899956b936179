"""Loss curves: the terminal chart, the PNG, the end-of-train summary and bad inputs.

All of it reads a metrics file recorded from a real run (tests/data/recorded_metrics.jsonl,
300 steps of `train --zloss 1e-4 --next-embed 0.1 --mlm 0.15`); nothing here compiles a
tinygrad kernel, so the module runs in seconds.
"""
import io
import json
import math
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # cli.py lives at the repo root
from cli import cli  # noqa: E402
from tinyar import plot  # noqa: E402
from tinyar.termchart import Chart, Curve, nice_ticks, si  # noqa: E402

RECORDED = Path(__file__).parent / "data" / "recorded_metrics.jsonl"
ROWS = [json.loads(line) for line in RECORDED.read_text().splitlines()]
N_VAL = sum(r["kind"] == "val" for r in ROWS)
BRAILLE = {chr(c) for c in range(0x2801, 0x2900)}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(RECORDED, d / "metrics.jsonl")
    return d


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def draw(renderable, width=100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def panel_of(text: str, metric: str) -> str:
    """The lines of the panel whose title starts with `metric`."""
    blocks = text.split("╭─ ")
    return next(b for b in blocks if b.startswith(metric + " "))


def marks(text: str) -> int:
    """Markers drawn inside plot areas (the legends' markers are in the titles)."""
    return sum(line.split("┤", 1)[1].count("●") for line in text.splitlines() if "┤" in line)


def test_recorded_file_reads_clean(run_dir):
    run = plot.read_metrics(run_dir)
    assert run.skipped == []
    assert len(run.rows) == len(ROWS) and [r["step"] for r in run.rows] == sorted(r["step"] for r in run.rows)
    steps, tokens, ce = run.series("ce")
    assert len(ce) == len(ROWS) - N_VAL and np.all(tokens == steps * tokens[0] / steps[0])
    assert len(run.series("val_ce")[0]) == N_VAL > 2


def test_plot_draws_every_component_with_validation_marks(run_dir):
    res = invoke("plot", run_dir)
    assert res.exit_code == 0, res.output
    for m in ("total", "ce", "zloss", "next_embed", "grad_norm", "lr"):
        body = panel_of(res.stdout, m)
        assert BRAILLE & set(body), f"{m} panel has no curve"
        assert "step" in body and "tokens" in body   # both x axes
    assert marks(panel_of(res.stdout, "ce")) == N_VAL   # every validation point, on the ce panel only
    assert marks(res.stdout) == N_VAL
    assert res.stderr == ""


def test_large_and_small_components_each_get_their_own_scale(run_dir):
    """z-loss (57 at step 1) and ce (5.6) each get a panel whose y labels span their own values."""
    out = invoke("plot", run_dir).stdout
    for m in ("ce", "zloss"):
        v = plot.read_metrics(run_dir).series(m)[2]
        labels = [float(line.split("┤")[0].strip("│ ").replace("k", "e3")) for line in panel_of(out, m).splitlines()
                  if "┤" in line and line.split("┤")[0].strip("│ ")]
        assert math.isclose(max(labels), v.max(), rel_tol=0.01) and math.isclose(min(labels), v.min(), rel_tol=0.01)


def test_chart_puts_high_values_at_the_top_left_to_right():
    """A falling line starts in the top-left cell and ends in the bottom-right one; a marker lands where it should."""
    x = np.arange(10.0)
    text = draw(Chart("t", [Curve("a", x, 10 - x, "cyan"), Curve("v", np.array([9.0]), np.array([10.0]), "red", True)],
                      height=4), width=40)
    rows = [line.split("┤")[1].rstrip("│ ") for line in text.splitlines() if "┤" in line]
    assert len(rows) == 4
    assert rows[0][0] in BRAILLE and rows[-1][-1] in BRAILLE
    assert rows[0].rstrip()[-1] == "●"          # the marker: last x, highest value
    assert set(rows[-1][:len(rows[-1]) // 2]) == {" "}   # nothing low on the left


def test_log_scale_only_when_values_span_a_decade():
    assert plot.wants_log("zloss", np.array([200.0, 2.0])) and not plot.wants_log("ce", np.array([5.5, 2.0]))
    assert not plot.wants_log("lr", np.array([1e-5, 3e-3])) and not plot.wants_log("zloss", np.array([0.0, 5.0]))


def test_several_runs_overlay_one_metric(run_dir, tmp_path, monkeypatch):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.jsonl").write_text(
        "".join(json.dumps({**r, "ce": r["ce"] + 1} if "ce" in r else {**r, "val_ce": r["val_ce"] + 1}) + "\n" for r in ROWS))
    monkeypatch.chdir(tmp_path)
    res = invoke("plot", "run", "other", "--metric", "ce")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("╭─ ") == 1   # one panel
    assert "━ run " in res.stdout and "━ other " in res.stdout and "● validation" in res.stdout   # the legend
    assert marks(res.stdout) == 2 * N_VAL


def test_unknown_metric_lists_the_available_ones(run_dir):
    res = invoke("plot", run_dir, "--metric", "loss")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.strip().count("\n") == 0
    assert "unknown metric 'loss'" in res.stderr and "ce, zloss, next_embed" in res.stderr and "val_bpb" in res.stderr


@pytest.mark.parametrize("case, expect", [
    ("missing", "does not exist"),
    ("no_metrics", "has no metrics.jsonl"),
    ("empty", "holds no metrics rows yet"),
    ("garbage", "holds no metrics rows yet (line 1 skipped"),
])
def test_nothing_to_plot_is_one_line_error(tmp_path, case, expect):
    d = tmp_path / "run"
    if case != "missing":
        d.mkdir()
    if case in ("empty", "garbage"):
        (d / "metrics.jsonl").write_text("" if case == "empty" else '{"kind": "tra')
    res = invoke("plot", d)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.stderr.startswith("error: ") and res.stderr.strip().count("\n") == 0
    assert expect in res.stderr


def test_run_killed_mid_write_plots_what_is_valid(run_dir):
    text = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(text[:-20])   # the last line is cut short
    res = invoke("plot", run_dir)
    assert res.exit_code == 0, res.output
    assert f"line {len(ROWS)} skipped (cut short" in res.stderr
    assert BRAILLE & set(panel_of(res.stdout, "ce"))


def test_non_finite_values_are_left_out_and_reported(run_dir):
    rows = [dict(r) for r in ROWS]
    train = [r for r in rows if r["kind"] == "train"]
    train[3]["ce"], train[4]["zloss"], train[5]["grad_norm"] = math.nan, math.inf, None
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))   # writes NaN, Infinity
    res = invoke("plot", run_dir)
    assert res.exit_code == 0, res.output
    assert f"ce: 1 non-finite value(s) not drawn (first at step {train[3]['step']})" in res.stderr
    assert "zloss: 1 non-finite" in res.stderr and "grad_norm: 1 non-finite" in res.stderr
    assert len(plot.read_metrics(run_dir).series("ce")[2]) == len(train) - 1


def test_a_resumed_run_keeps_the_last_row_of_each_step():
    rows = [{"kind": "train", "step": s, "ce": 3.0} for s in (1, 2, 3)] + [{"kind": "train", "step": 2, "ce": 9.0}]
    run = plot.from_rows(rows)
    assert list(run.series("ce")[2]) == [3.0, 9.0, 3.0] and "logged again" in run.skipped[0]


def test_png_is_an_image_of_the_expected_size_with_curves(run_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    res = invoke("plot", run_dir, "--png", out)
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, round(100 * (2.2 * 6 + 1.0)))   # 8 × (2.2 per panel + 1) inches at 100 dpi
    from matplotlib.image import imread
    px = imread(out)[..., :3]                       # (H, W, 3) floats in [0, 1]
    assert px.shape == (height, width, 3)
    assert (px.min(-1) < 0.9).mean() > 0.02         # not blank: axes, text and lines
    blue = (px[..., 2] - px[..., 0] > 0.3).sum()    # matplotlib's first colour, the curves
    assert blue > 2000


def test_png_without_matplotlib_says_how_to_install(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    res = invoke("plot", run_dir, "--png", tmp_path / "x.png")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "pip install matplotlib" in res.stderr and res.stderr.strip().count("\n") == 0
    assert not (tmp_path / "x.png").exists() and res.stdout == ""   # refused before drawing


def test_summary_shows_ce_with_validation_and_each_aux_loss():
    text = draw(plot.render_summary(ROWS), width=100)
    assert marks(text) == N_VAL
    for m in ("ce", "zloss", "next_embed"):
        assert f"─ {m} " in text
    no_aux = [{k: (0.0 if k == "next_embed" else v) for k, v in r.items()} for r in ROWS]
    assert "next_embed" not in draw(plot.render_summary(no_aux))   # a loss that is off is not drawn


def test_train_ends_with_the_summary(tmp_path, monkeypatch):
    """The end of `train`, without compiling: a stand-in trainer replays the recorded rows."""
    import tinyar.train

    class FakeTrainer:
        def __init__(self, cfg, **kwargs):
            self.step, self.model = 0, type("M", (), {"num_params": lambda self: 1})()

    monkeypatch.setattr(tinyar.train, "Trainer", FakeTrainer)
    monkeypatch.setattr(tinyar.train, "train", lambda trainer, data, **hooks: iter(ROWS))
    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world " * 400)
    res = invoke("train", corpus, "--out", tmp_path / "run", "--sample-tokens", 0, "--eval-sample-tokens", 0)
    assert res.exit_code == 0, res.output
    assert "─ ce " in res.stdout and "─ zloss " in res.stdout and BRAILLE & set(res.stdout)
    assert f"plot {tmp_path / 'run'}" in res.stdout


def test_ascii_console_gets_ascii_dots():
    class AsciiFile(io.StringIO):
        encoding = "ascii"

    console = Console(file=AsciiFile(), width=40, color_system=None)
    console.print(Chart("t", [Curve("a", np.arange(5.0), np.arange(5.0), "cyan")], height=3))
    text = console.file.getvalue()
    assert "*" in text and not BRAILLE & set(text) and "┤" not in text


def test_panels_that_say_nothing_new_are_left_out_with_a_note(run_dir):
    rows = [{**r, "total": r["ce"], "next_embed": 0.0} if r["kind"] == "train" else r for r in ROWS]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = invoke("plot", run_dir).stdout
    assert "total equals ce" in out and "next_embed is 0 throughout (off)" in out
    assert "╭─ total " not in out and "╭─ next_embed " not in out and "╭─ ce " in out


def test_x_axis_in_tokens(run_dir):
    out = invoke("plot", run_dir, "--metric", "ce", "--x", "tokens").stdout
    axis = [line for line in out.splitlines() if "tokens" in line and "┤" not in line]
    assert len(axis) == 1 and "step" not in out   # one x axis, in tokens
    tokens = [r["tokens"] for r in ROWS]
    assert axis[0].strip("│ ").split()[1:] == [si(t) for t in nice_ticks(min(tokens), max(tokens))]   # round numbers


def with_grad_share(rows: list[dict], lse_shift: float) -> str:
    """The recorded rows as if trained with --grad-share: its keys added to every training row."""
    out = []
    for r in rows:
        if r["kind"] == "train":
            s = r["step"] / 300
            r = {**r, "gnorm_total": r["grad_norm"], "gnorm_ce": 0.9 * r["grad_norm"], "share_ce": 0.9 + 0.05 * s,
                 "share_zloss": 0.1 - 0.05 * s, "cos_zloss": -0.2 * s, "lse_max_l0": 2 + lse_shift * s,
                 "lse_mean": 1 + lse_shift * s, "lse_max": 2.5 + lse_shift * s}
        out.append(json.dumps(r) + "\n")
    return "".join(out)


def test_grad_share_metrics_plot_and_compare(tmp_path, monkeypatch):
    # `plot a b --metric lse_max` compares the runs; one run lists what --grad-share logged
    for name, shift in (("with", 0.0), ("without", 3.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text(with_grad_share(ROWS, shift))
    monkeypatch.chdir(tmp_path)
    res = invoke("plot", "with", "without", "--metric", "lse_max")
    assert res.exit_code == 0, res.output
    assert res.stdout.count("╭─ ") == 1 and "max attention log-sum-exp, all layers" in res.stdout
    assert "━ with " in res.stdout and "━ without " in res.stdout and BRAILLE & set(res.stdout)
    assert "5.5" in res.stdout and "2.5" in res.stdout   # both runs' ranges on one axis
    one = invoke("plot", "with")
    assert one.exit_code == 0, one.output
    assert ("draw one with --metric: gnorm_total, gnorm_ce, share_ce, share_zloss, cos_zloss, lse_max_l0, lse_mean, "
            "lse_max") in " ".join(one.stdout.split())
    for metric, about in (("share_zloss", "zloss_weight·zloss's share"), ("cos_zloss", "cosine between"),
                          ("lse_max_l0", "layer 0")):
        res = invoke("plot", "with", "--metric", metric)
        assert res.exit_code == 0 and about in res.stdout, (metric, res.output)
    bad = invoke("plot", "with", "--metric", "share_next_embed")   # a component that was off
    assert bad.exit_code == 2 and "with has no share_next_embed values" in bad.stderr and "cos_zloss" in bad.stderr
