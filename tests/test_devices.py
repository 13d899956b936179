"""Device choice and data-parallel training on two virtual CPU devices (CPU:0, CPU:1)."""
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import TINY
from tinyar.config import COMPONENTS
from tinyar.data import Corpus
from tinyar.devices import DeviceError, parse, use_device
from tinyar.train import Trainer, train

TEXT = b"data parallel training splits the batch across devices. " * 30
CFG = TINY.replace(steps=3, log_every=1, eval_every=3, mask_prob=0.25, mask_mode="fcm", zloss_weight=1e-2,
                   next_embed_weight=0.1, batch_size=4)
DEVS = ("CPU:0", "CPU:1")


def losses(trainer):
    return np.array([[r[k] for k in COMPONENTS]
                     for r in train(trainer, Corpus(TEXT, CFG.seq_len)) if r["kind"] == "train"])


@pytest.fixture(scope="module")
def pair():
    one, two = Trainer(CFG), Trainer(CFG, devices=DEVS)
    return one, two, losses(one), losses(two)


@pytest.mark.slow
def test_data_parallel_matches_one_device(pair):
    # same global batch split over two devices: every component equals the one-device run
    _, _, a, b = pair
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_weights_identical_on_every_device(pair):
    # after the steps each device holds the same weights, equal to the one-device weights
    one, two, _, _ = pair
    w1 = one.model.tok_emb.numpy()
    for d in DEVS:
        np.testing.assert_allclose(two.model.tok_emb.to(d).numpy(), w1, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_checkpoints_move_between_one_and_many_devices(pair):
    # a multi-device checkpoint loads on one device (and back) and continues identically
    one, two, _, _ = pair
    arrays, meta = two.state_arrays(), two.state_meta()
    fresh = Trainer(CFG.replace(steps=4))
    fresh.load_state(arrays, meta)
    back = Trainer(CFG.replace(steps=4), devices=DEVS)
    back.load_state(one.state_arrays(), one.state_meta())
    np.testing.assert_allclose(losses(back), losses(fresh), rtol=1e-5, atol=1e-7)


def test_device_specs():
    assert parse("cpu:0, cpu:1") == ("CPU:0", "CPU:1")
    with pytest.raises(DeviceError, match="one kind"):
        parse("CPU:0,CL")
    with pytest.raises(DeviceError, match="working devices: .*CPU"):
        use_device("METAL")


def test_batch_must_split_evenly():
    with pytest.raises(ValueError, match="multiple of the 2 devices"):
        Trainer(CFG.replace(batch_size=3), devices=DEVS)


def test_devices_command_lists_backends():
    from cli import cli
    res = CliRunner().invoke(cli, ["devices"])
    assert res.exit_code == 0
    assert "CPU" in res.output and "METAL" in res.output and "train picks" in res.output


def test_backend_errors_say_a_phrase_once():
    # tinygrad 0.14's NV/AMD message repeats itself; the devices table says it once
    from tinyar.devices import one_line
    e = ExceptionGroup("No interface for NV:0 is available is available", [OSError("a"), OSError("b")])
    assert one_line(e) == "ExceptionGroup: No interface for NV:0 is available (2 sub-exceptions)"
    assert one_line(RuntimeError("a kernel kernel\nfailed: 0 0 0")) == "RuntimeError: failed: 0"


def test_devices_speed_names_the_fastest_working_backend(monkeypatch):
    # proves `devices --speed` times only working backends and names the fastest (timings faked;
    # the real timing runs once below on the suite's device)
    import tinyar.devices as D
    from cli import cli
    monkeypatch.setattr(D, "backend_table", lambda: [
        {"device": "CPU", "works": True, "reason": "", "hint": ""},
        {"device": "CL", "works": True, "reason": "", "hint": ""},
        {"device": "CUDA", "works": False, "reason": "no driver", "hint": "install it"}])
    timed = []
    monkeypatch.setattr(D, "matmul_speed", lambda name: timed.append(name) or {"CPU": 8.5, "CL": 19.9}[name])
    res = CliRunner().invoke(cli, ["devices", "--speed"], terminal_width=120)
    assert res.exit_code == 0, res.output
    assert timed == ["CPU", "CL"] and "fastest here on a 512² matmul: CL (19.9 GFLOP/s" in res.output
    assert "bench --device CL" in res.output
    assert "devices --speed" in CliRunner().invoke(cli, ["devices"]).output   # plain `devices` says how


def test_matmul_speed_is_a_positive_rate():
    from tinyar.devices import matmul_speed
    assert 0 < matmul_speed("CPU", n=64, reps=1) < 1e6


@pytest.fixture
def restore_dev():
    # the CLI sets tinygrad's default device for the process; put the suite's back afterwards
    import os
    from tinygrad.helpers import DEV
    saved, env = repr(DEV), os.environ["DEV"]
    yield
    DEV.value, os.environ["DEV"] = saved, env


@pytest.mark.slow
def test_cli_trains_data_parallel(tmp_path, restore_dev):
    # DEV=CPU:0 would name a renderer in tinygrad, so the CLI must keep indices out of DEV
    import json
    from cli import cli
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(TEXT)
    flags = ["--dim", "16", "--depth", "2", "--heads", "2", "--seq-len", "8", "--batch-size", "4", "--mlm", "0.25",
             "--mlm-mode", "fcm", "--zloss", "1e-2", "--next-embed", "0.1", "--steps", "3", "--log-every", "1"]
    res = CliRunner().invoke(cli, ["train", str(corpus), *flags, "--device", "CPU:0,CPU:1", "--out", str(tmp_path / "r"),
                                   "--sample-tokens", "4", "--eval-sample-tokens", "0"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3] and all(np.isfinite(r["total"]) for r in train_rows)


def test_one_device_by_index_is_refused(restore_dev):
    with pytest.raises(DeviceError, match="--device CPU:0,CPU:1"):
        use_device("CPU:1")
    assert use_device("CPU:0") == "CPU"


def test_probe_of_a_compiler_choice_uses_that_compiler():
    # CPU:LLVM is the CPU device compiled by LLVM, chosen through DEV: the probe must ask for
    # that compiler (it used to compile with clang and report LLVM as working)
    from tinyar.devices import probe
    reason = probe("CPU:NOSUCHCOMPILER")
    assert reason is not None and "NOSUCHCOMPILER" in reason
    assert probe("CPU") is None
