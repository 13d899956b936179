"""The benchmark and the kernel cache, on the shared TINY shape (same kernels as test_train)."""
import json
from pathlib import Path
import pickle
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import TINY, TINY_FLAGS
from tinyar import bench, kernel_cache

RUN_FLAGS = [*TINY_FLAGS, "--mlm", "0.25", "--zloss", "1e-4"]   # test_train's `run` settings: its kernels are reused


def test_model_flops_is_six_per_weight_per_token_plus_attention():
    # d 16, 2 layers, 2 heads of 8, T 8, B 2, vocab 258: by hand
    weights = 2 * (4 * 16 * 16 + 2 * 4 * 16 * 16) + 16 * 258
    attention = 2 * 3 * 4 * 2 * 8 * 8 * 16
    assert bench.model_flops(TINY) == 6 * weights * 2 * 8 + attention
    assert bench.model_flops(TINY.replace(next_embed_weight=0.1)) == bench.model_flops(TINY) + 6 * 2 * 16 * 16 * 16


def test_component_configs_switch_one_component_each():
    cfgs = bench.component_configs(TINY.replace(zloss_weight=1.0))
    assert cfgs["ce only"].zloss_weight == 0 and not cfgs["ce only"].use_next_embed
    assert cfgs["+ z-loss"].zloss_weight == 1e-4 and cfgs["+ next-embed"].next_embed_weight == 0.1
    assert cfgs["all"].mask_prob == 0.15 and cfgs["all"].use_next_embed


def test_kernel_cache_round_trip(tmp_path, monkeypatch):
    # what one process generated, another process loads: same keys, nothing regenerated
    path = tmp_path / "kernels.pkl"
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", str(path))
    from tinygrad import Tensor
    (Tensor([1.0, 2.0]) * 3).realize()
    kernel_cache.save()
    saved = pickle.loads(path.read_bytes())
    programs, schedules = kernel_cache._caches()
    assert set(saved["programs"]) == set(programs) and saved["programs"]
    code = "from tinyar import kernel_cache; print(kernel_cache.load())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "TINYAR_KERNEL_CACHE": str(path)})
    assert int(out.stdout) == len(saved["programs"]) + len(saved["schedules"])


def test_kernel_cache_off_and_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", "0")
    assert kernel_cache.path() is None and kernel_cache.load() == 0
    kernel_cache.save()   # a no-op, no file anywhere
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", str(bad))
    assert kernel_cache.load() == 0   # a damaged file is ignored, then replaced
    kernel_cache.save()
    assert pickle.loads(bad.read_bytes())["programs"]


@pytest.mark.slow
@pytest.mark.parametrize("vs_torch", [False, True])
def test_cli_bench_prints_the_table(tmp_path, monkeypatch, vs_torch):
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", str(tmp_path / "k.pkl"))
    if vs_torch and bench.torch_available():
        pytest.skip(bench.torch_available())
    from cli import cli
    res = CliRunner().invoke(cli, ["bench", *RUN_FLAGS, "--timed-steps", "2", "--json"]
                             + (["--vs-torch"] if vs_torch else []))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    rows = {r["name"]: r for r in out["rows"]}
    tiny = rows["tinyar"]
    assert len(tiny["times"]) == 2 and tiny["step_s"] > 0 and tiny["first_s"] > 0
    assert tiny["tokens_per_s"] == pytest.approx(2 * 8 / tiny["step_s"])
    assert tiny["buffers"] > 0 and out["numpy_flops"] > 1e8
    if vs_torch:
        ref = rows["x-transformers"]
        assert ref["vs_torch"] == 1.0 and tiny["vs_torch"] == pytest.approx(ref["step_s"] / tiny["step_s"])
        assert out["vs_torch"] == tiny["vs_torch"]   # the headline numbers a script reads
        if ref["peak_rss"]:   # growth can be 0 on a model this small
            assert out["rss_vs_torch"] == pytest.approx(tiny["peak_rss"] / ref["peak_rss"])
    assert out["first_step"] is None   # only with --first-step
    res = CliRunner().invoke(cli, ["bench", *RUN_FLAGS, "--timed-steps", "1"])
    assert res.exit_code == 0 and "tokens/s" in res.output and "numpy" in res.output


def test_graph_hash_of_the_custom_backward_is_the_same_in_every_process():
    # kernel_cache finds a saved schedule by the graph's content hash; tinygrad hashed a custom
    # backward by its id(), new in every process, so training graphs never matched on a second run
    code = ("from tinygrad import Tensor; from tinyar import kernel_cache; kernel_cache.stable_call_names(); "
            "from tinyar.kernels import matmul_wt, embedding; y = matmul_wt(Tensor.empty(2, 3), Tensor.empty(4, 3)); "
            "y = y.sum() + embedding(Tensor.empty(5, 3), Tensor([[1, 2]])).sum(); print(y.uop.key.hex())")
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(keys) == 1 and len(keys.pop().strip()) == 64


@pytest.mark.slow
def test_a_second_run_from_the_kernel_cache_trains_identically(tmp_path):
    # run 2 takes its schedules and generated code from run 1's cache file: same losses, bit for bit
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(b"the kernel cache must not change a single number. " * 40)
    env = {**__import__("os").environ, "TINYAR_KERNEL_CACHE": str(tmp_path / "k.pkl")}
    losses = []
    for run in ("a", "b"):
        subprocess.run([sys.executable, "cli.py", "train", str(corpus), *RUN_FLAGS, "--next-embed", "0.1",
                        "--steps", "3", "--log-every", "1", "--eval-sample-tokens", "0", "--sample-tokens", "4",
                        "--out", str(tmp_path / run)], cwd=Path(__file__).resolve().parent.parent, env=env,
                       check=True, capture_output=True)
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        losses.append([(r["ce"], r["zloss"], r["next_embed"], r["grad_norm"]) for r in rows if r["kind"] == "train"])
        if run == "a":
            assert pickle.loads((tmp_path / "k.pkl").read_bytes())["schedules"]
    assert len(losses[0]) == 3 and losses[0] == losses[1]


@pytest.mark.slow
def test_first_step_runs_cold_then_warm_in_fresh_processes(monkeypatch):
    # two child processes on one new, empty pair of caches (tinygrad's binaries, tinyar's kernels);
    # the user's own caches are not touched (the children get CACHEDB/TINYAR_KERNEL_CACHE in a temp dir)
    monkeypatch.setenv("TINYAR_KERNEL_CACHE", "/nonexistent/never-written.pkl")
    out = bench.first_step(TINY.replace(zloss_weight=1e-4, mask_prob=0.25))
    assert set(out) == {"cold_s", "warm_s"} and out["cold_s"] > 0 and out["warm_s"] > 0
