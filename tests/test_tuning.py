"""Speed helpers that must not change a number. Tuned kernel options kept as data (tinyar/tuning.py): a tabled kernel is compiled with exactly
its options and the same values, every other kernel, device or damaged table keeps tinygrad's
defaults, and `cli.py tune` writes a table that the next run applies. Buffer reuse on OpenCL
(tinyar/buffer_reuse.py) allocates less and gives bit-identical losses."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Device, Tensor
from tinygrad.codegen import to_program_cache
from tinygrad.codegen.opt import Opt, OptOps

from conftest import TEXT, TINY, TINY_FLAGS, invoke
from tinyar import tuning

ROOT = Path(__file__).resolve().parents[1]
OPTS = (Opt(OptOps.UPCAST, 0, 4), Opt(OptOps.UNROLL, 0, 4))


@pytest.fixture
def tables(tmp_path, monkeypatch):
    """No shipped or user tables but the ones a test writes into tmp_path/user."""
    monkeypatch.setattr(tuning, "SHIPPED", tmp_path / "shipped")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TINYAR_TUNED", raising=False)
    yield tuning.user_dir()
    tuning._table.clear()


def matmul(m: int, seed: int):
    """a (m,64)@(64,32) matmul on fresh inputs -> (tinygrad result, numpy reference)"""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, 64), dtype=np.float32), rng.standard_normal((32, 64), dtype=np.float32)
    return (Tensor(a) @ Tensor(b).T).contiguous(), a @ b.T


def kernel_of(m: int):
    """the matmul's kernel AST, as the tuner collects it"""
    [(ast, launches)] = [k for k in tuning.step_kernels(lambda: matmul(m, 0)[0].realize())]
    assert launches == 1
    return ast


def compiled_with(ast, opts) -> bool:
    """did tinygrad compile this AST with opts_to_apply=opts in this process?"""
    key = ast.replace(arg=replace(ast.arg, opts_to_apply=opts)).key
    return any(k[0] == key for k in to_program_cache)


def write(folder: Path, device_id: str, kernels: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "t.json"
    p.write_text(json.dumps({"format": tuning.FORMAT, "device": device_id, "model": {},
                             "kernels": {k: {"launches": 1, "opts": tuning.opts_to_json(o)} for k, o in kernels.items()}}))
    return p


def test_a_tabled_kernel_is_compiled_with_its_options_and_the_same_values(tables):
    dev = Device.DEFAULT
    ast = kernel_of(48)
    write(tables, tuning.device_id(dev), {ast.key.hex(): OPTS})
    assert tuning.enable(dev) == 1
    before = tuning.applied()
    y, ref = matmul(48, 1)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-4)
    assert compiled_with(ast, OPTS) and tuning.applied() == before + 1
    # A/B switch: compiled with tinygrad's heuristic inside active(False)
    with tuning.active(False):
        other = kernel_of(40)
    assert not compiled_with(other, OPTS)


def test_other_kernels_devices_and_damaged_tables_keep_tinygrads_defaults(tables):
    dev = Device.DEFAULT
    ast = kernel_of(56)
    write(tables, tuning.device_id(dev) + "-elsewhere", {ast.key.hex(): OPTS})
    assert tuning.load(dev) == 0                                # a table made for other hardware
    (tables / "t.json").write_text('{"format": 1, "device": ')  # cut short
    assert tuning.load(dev) == 0
    write(tables, tuning.device_id(dev), {ast.key.hex(): OPTS})
    assert tuning.enable(dev) == 1
    before = tuning.applied()
    y, ref = matmul(24, 2)                                      # another shape: not in the table
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-4)
    assert tuning.applied() == before


def test_the_off_switch(tables, monkeypatch):
    dev = Device.DEFAULT
    write(tables, tuning.device_id(dev), {"00" * 32: OPTS})
    monkeypatch.setenv("TINYAR_TUNED", "0")
    assert tuning.enable(dev) == 0


def test_shipped_tables_are_well_formed():
    shipped = sorted((ROOT / "tinyar" / "tuned").glob("*.json"))
    assert shipped, "the repository ships at least one tuned table (README Speed)"
    for p in shipped:
        data = json.loads(p.read_text())
        assert data["format"] == tuning.FORMAT and data["device"].count("|") == 2, p
        assert data["kernels"], p
        for key, row in data["kernels"].items():
            assert len(bytes.fromhex(key)) == 32 and row["launches"] >= 1
            assert row["tuned_ms"] < row["default_ms"]
            assert all(isinstance(o, Opt) for o in tuning._opts_from_json(row["opts"]))


@pytest.mark.slow
def test_tune_writes_a_table_that_the_next_run_applies(tables):
    out = tables / "tiny.json"
    res = invoke("tune", *TINY_FLAGS, "--minutes", "0.5", "--per-kernel", "5", "--ab-steps", "2", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["device"] == tuning.device_id(Device.DEFAULT) and data["model"]["dim"] == TINY.dim
    for row in data["kernels"].values():
        assert row["tuned_ms"] < row["default_ms"]
    assert tuning.load(Device.DEFAULT) == len(data["kernels"])
    if data["kernels"]:
        assert "tuned" in res.output and "×" in res.output


CL_PROBE = """
import json
from tinyar import tuning
print(json.dumps({"device": tuning.device_id("CL")}))
"""


def cl_device_id() -> str | None:
    """tuning.device_id('CL') here, or None without a working OpenCL device"""
    if not Path("/etc/OpenCL/vendors").is_dir():
        return None
    res = subprocess.run([sys.executable, "-c", CL_PROBE], cwd=ROOT, env={**os.environ, "DEV": "CL"},
                         capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["device"] if res.returncode == 0 else None


@pytest.mark.slow
def test_the_shipped_cl_table_applies_to_the_default_model_and_keeps_its_losses():
    """The default model's step on CL with the shipped table: its kernels are found in the table,
    and two steps give the same losses as tinygrad's defaults (only schedules differ). Runs where
    the table was made for this machine's OpenCL device (elsewhere the table does not apply)."""
    table = json.loads((ROOT / "tinyar" / "tuned" / "CL-default.json").read_text())
    here = cl_device_id()
    if here != table["device"]:
        pytest.skip(f"the shipped table is for {table['device']!r}, this machine's CL is {here!r}")
    code = """
import json
from tinyar import tuning
from tinyar.bench import TinyarRun, stdlib_corpus
from tinyar.config import Config
cfg = Config(mask_prob=0.15, zloss_weight=1e-4, next_embed_weight=0.1)
out = {}
for tuned in (False, True):
    run = TinyarRun(cfg, stdlib_corpus(cfg), tuned=tuned)
    rows = []
    for _ in range(2):
        batch, mask = run.trainer.next_batch(run.corpus)
        with tuning.active(tuned):
            rows.append(run.trainer.train_step(batch, mask))
    out[str(tuned)] = rows
print(json.dumps({"applied": tuning.applied(), "tabled": len(tuning._table), "rows": out}))
"""
    env = {**os.environ, "DEV": "CL", "TINYAR_KERNEL_CACHE": "0"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["applied"] == got["tabled"] == len(table["kernels"])   # every tabled kernel is one of the step's
    for a, b in zip(got["rows"]["False"], got["rows"]["True"]):
        for k in ("ce", "zloss", "next_embed", "total"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k


# ---------------------------------------------------------------- buffer reuse on OpenCL (tinyar/buffer_reuse.py)
HAS_CL = Path("/etc/OpenCL/vendors").is_dir()

REUSE_CODE = """
import json, numpy as np
from tinygrad import Tensor, TinyJit
from tinygrad.helpers import GlobalCounters
from tinyar import buffer_reuse
buffer_reuse.install()
x0 = np.arange(4096, dtype=np.float32).reshape(64, 64) / 4096
def chain(x):   # eight intermediates of one size, each dead once the next is written
    for i in range(8):
        x = (x * 1.5 + i).contiguous()
    return x.sum(axis=1)
out = {}
for on in (False, True):
    f, before = TinyJit(chain), GlobalCounters.mem_used
    with buffer_reuse.active(on):
        for _ in range(3):
            y = f(Tensor(x0)).numpy()
    out[str(on)] = {"bytes": GlobalCounters.mem_used - before, "y": y.tolist()}
print(json.dumps(out))
"""


@pytest.mark.skipif(not HAS_CL, reason="needs an OpenCL device (PoCL)")
def test_buffer_reuse_shares_dead_buffers_on_cl_with_the_same_values():
    env = {**os.environ, "DEV": "CL", "TINYAR_KERNEL_CACHE": "0"}
    res = subprocess.run([sys.executable, "-c", REUSE_CODE], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    ref = np.arange(4096, dtype=np.float32).reshape(64, 64) / 4096
    for i in range(8):
        ref = ref * 1.5 + i
    for on in ("False", "True"):
        np.testing.assert_allclose(got[on]["y"], ref.sum(axis=1), rtol=1e-5)
    # without reuse each of the 7 inner intermediates keeps its 16 KiB; with it two alternate
    assert got["True"]["bytes"] <= got["False"]["bytes"] - 4 * 64 * 64 * 4, got


@pytest.mark.slow
@pytest.mark.skipif(not HAS_CL, reason="needs an OpenCL device (PoCL)")
def test_training_on_cl_gives_the_same_losses_with_and_without_buffer_reuse():
    code = f"""
import json
from tinyar import buffer_reuse
from tinyar.bench import TinyarRun
from tinyar.config import Config
from tinyar.data import Corpus
from tinygrad.helpers import GlobalCounters
cfg = Config.from_dict(json.loads({json.dumps(json.dumps(TINY.replace(mask_prob=0.25, zloss_weight=1e-3, next_embed_weight=0.1).to_dict()))}))
corpus = Corpus({TEXT!r}, cfg.seq_len)
out = {{}}
for on in (False, True):
    before = GlobalCounters.mem_used
    with buffer_reuse.active(on):
        run = TinyarRun(cfg, corpus)
        rows = [run.trainer.train_step(*run.trainer.next_batch(corpus)) for _ in range(4)]
    out[str(on)] = rows
    out[f"bytes {{on}}"] = GlobalCounters.mem_used - before
print(json.dumps(out))
"""
    env = {**os.environ, "DEV": "CL", "TINYAR_KERNEL_CACHE": "0"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["False"] == got["True"]     # same kernels, same order: bit-identical losses
    assert got["bytes True"] < 0.8 * got["bytes False"], got
