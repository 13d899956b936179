"""End-to-end training on the shared TINY shape: the loss falls, runs repeat, the CLI works."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TEXT, TINY, TINY_FLAGS
from tinyar.data import Corpus
from tinyar.train import Trainer, lr_at, train


@pytest.fixture(scope="module")
def run():
    cfg = TINY.replace(log_every=1, mask_prob=0.25, zloss_weight=1e-4)
    trainer = Trainer(cfg)
    rows = list(train(trainer, Corpus(TEXT, cfg.seq_len)))
    return cfg, trainer, rows


@pytest.mark.slow
def test_loss_falls_on_a_repetitive_corpus(run):
    # proves the jitted step really updates the weights in a useful direction
    cfg, _, rows = run
    ce = [r["ce"] for r in rows if r["kind"] == "train"]
    assert len(ce) == cfg.steps
    assert ce[0] == pytest.approx(np.log(258), abs=0.3)   # untrained byte model ~ ln V
    assert np.mean(ce[-5:]) < ce[0] - 2.0
    val = [r for r in rows if r["kind"] == "val"]
    assert [r["step"] for r in val] == [20, 40]
    assert val[-1]["val_ce"] < val[0]["val_ce"]
    assert val[-1]["val_bpb"] == pytest.approx(val[-1]["val_ce"] / np.log(2))


@pytest.mark.slow
def test_every_component_is_reported_and_total_is_weighted(run):
    # total = ce + w_z * zloss (next-embed off): the trained-on total matches its parts
    cfg, _, rows = run
    for r in (r for r in rows if r["kind"] == "train"):
        assert r["total"] == pytest.approx(r["ce"] + cfg.zloss_weight * r["zloss"], rel=1e-5)
        assert r["next_embed"] == 0.0 and r["grad_norm"] > 0


@pytest.mark.slow
def test_same_seed_same_losses(run):
    # a fresh Trainer with the same seed draws the same windows and masks and gets the same numbers
    cfg, _, rows = run
    again = Trainer(cfg.replace(steps=5))
    rows2 = [r for r in train(again, Corpus(TEXT, cfg.seq_len)) if r["kind"] == "train"]
    first = [r for r in rows if r["kind"] == "train"][:5]
    for a, b in zip(first, rows2):
        assert a["total"] == pytest.approx(b["total"], rel=1e-6)


def test_lr_schedule_warms_up_then_decays():
    # warmup is linear up to lr, then cosine down to lr * min_lr_ratio at the last step
    cfg = TINY
    lrs = [lr_at(s, cfg) for s in range(cfg.steps)]
    assert lrs[0] == pytest.approx(cfg.lr / cfg.warmup)
    assert lrs[cfg.warmup - 1] == pytest.approx(cfg.lr)
    assert all(a >= b for a, b in zip(lrs[cfg.warmup:], lrs[cfg.warmup + 1:]))
    assert lr_at(cfg.steps, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


@pytest.mark.slow
def test_cli_train_writes_table_metrics_checkpoint_and_sample(tmp_path):
    # the user's main job through Click: rows for every component, "off" for unused ones
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    from cli import cli
    res = CliRunner().invoke(cli, ["train", str(corpus), *TINY_FLAGS, "--steps", "4", "--log-every", "2",
                                   "--eval-every", "4", "--zloss", "1e-4", "--mlm", "0.15",
                                   "--out", str(tmp_path / "run"), "--sample-tokens", "20"])
    assert res.exit_code == 0, res.output
    assert "next-emb off" in res.output and "ne·w off" in res.output
    assert "val ce" in res.output and "sample" in res.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 4]
    assert (tmp_path / "run" / "ckpt-00000004.safetensors").exists()


@pytest.mark.parametrize("args, expect", [
    (["--mlm", "1.5"], "--mlm must be in [0, 1)"),
    (["--zloss", "-1"], "--zloss is a loss weight"),
    (["--heads", "3"], "--heads 3 does not divide --dim 16"),
])
def test_cli_bad_settings_fail_in_one_line(tmp_path, args, expect):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(TEXT)
    from cli import cli
    flags = TINY_FLAGS + args if "--heads" not in args else TINY_FLAGS[:4] + args + TINY_FLAGS[6:]
    res = CliRunner().invoke(cli, ["train", str(corpus), *flags, "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and expect in res.output and "Traceback" not in res.output


def test_cli_corpus_errors(tmp_path):
    from cli import cli
    res = CliRunner().invoke(cli, ["train", str(tmp_path / "missing.txt"), *TINY_FLAGS])
    assert res.exit_code == 2 and "does not exist" in res.output
    short = tmp_path / "short.txt"
    short.write_bytes(b"abc")
    res = CliRunner().invoke(cli, ["train", str(short), *TINY_FLAGS])
    assert res.exit_code == 2 and "needs at least 20" in res.output
