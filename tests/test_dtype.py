"""--dtype: half-precision matmuls with float32 master weights, norms, softmax statistics and losses.

Verified on the test device: float16 trains on the shared TINY shape close to float32; the
graph checks below build lazy tensors only (no kernels), so they cover bfloat16 too, whether or
not the device can run it.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest
from tinygrad import Tensor, dtypes
from tinygrad.nn.state import get_parameters, get_state_dict

from conftest import TEXT, TINY, TINY_NE
from tinyar import checkpoint as ckpt
from tinyar import devices
from tinyar.config import COMPONENTS, Config, ConfigError
from tinyar.data import Corpus
from tinyar.loss import autoregressive_loss
from tinyar.model import Decoder
from tinyar.train import Trainer

HALF = (dtypes.float16, dtypes.bfloat16)
STEPS = 8
# float16 keeps 11 significant bits: one rounding of a matmul input is off by at most 2^-11 ~ 4.9e-4
# relative, and a loss averages many such products, so its error is smaller still (measured on CPU
# over 8 steps: ce 3e-6, z-loss 1.3e-4, gradient norm 1.1e-4). 1e-3 allows two roundings.
REL = 1e-3


def graph_dtypes(*ts: Tensor) -> set:
    return {getattr(u.dtype, "base", u.dtype) for t in ts for u in t.uop.toposort()}


def test_config_accepts_the_three_dtypes_and_refuses_others():
    # proves the field defaults to float32, takes each supported name, and refuses others naming --dtype
    assert Config().dtype == "float32"
    for ok in ("float32", "float16", "bfloat16"):
        Config(dtype=ok).validate()
    for bad in ("half", "float64", "fp16", ""):
        with pytest.raises(ConfigError) as e:
            Config(dtype=bad).validate()
        assert "--dtype" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_model_keeps_statistics_and_losses_in_float32(dtype):
    # lazy graph only (nothing compiles): the matmuls are in the half dtype, while the master
    # weights, logits, the attention log-sum-exp (what the z-loss squares), the final hidden state,
    # the next-embed prediction and every loss component are float32
    model = Decoder(TINY_NE.replace(dtype=dtype))
    tokens = np.arange(2 * 9).reshape(2, 9) % 250
    mask = np.zeros((2, 8), bool)
    mask[:, 3] = True
    logits, lses, hidden = model(Tensor(tokens[:, :-1].astype(np.int32)))
    assert logits.dtype == hidden.dtype == model.next_embed(hidden).dtype == dtypes.float32
    assert all(lse.dtype == dtypes.float32 for lse in lses)
    out = autoregressive_loss(model, tokens, mask_positions=mask, mask_mode="fcm", zloss_weight=0.1,
                              next_embed_weight=0.1)
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(COMPONENTS, dtypes.float32)
    assert getattr(dtypes, dtype) in graph_dtypes(out["total"])       # the half dtype is really used
    assert all(p.dtype == dtypes.float32 for p in get_parameters(model))
    grads = out["total"].gradient(*get_parameters(model))
    assert all(g.dtype == dtypes.float32 for g in grads)             # the optimizer sees float32


def test_float32_graph_has_no_half_tensor():
    # the default adds nothing: no half-precision value anywhere in the loss graph or its gradient
    model = Decoder(TINY_NE)
    out = autoregressive_loss(model, np.arange(18).reshape(2, 9), zloss_weight=0.1, next_embed_weight=0.1)
    grads = out["total"].gradient(*get_parameters(model))
    assert not graph_dtypes(out["total"], *grads) & set(HALF)


def test_check_dtype_message(monkeypatch):
    # proves the error names the dtype, the device and the reason, offers the fix, is one line;
    # and float32 is never probed
    monkeypatch.setattr(devices, "probe_dtype", lambda dtype, device=None: "compiler: no half here")
    with pytest.raises(devices.DeviceError) as e:
        devices.check_dtype("float16", ("CPU:0", "CPU:1"))
    msg = str(e.value)
    assert msg.startswith("--dtype float16 is not supported on CPU:0 here (compiler: no half here); "
                          "use --dtype float32") and "python cli.py devices" in msg and "\n" not in msg
    monkeypatch.setattr(devices, "probe_dtype", lambda *a: pytest.fail("float32 was probed"))
    devices.check_dtype("float32", "CPU")


def clang_has_bf16() -> bool:
    """An independent check: does this clang compile a __bf16 for the target tinygrad's CPU backend uses?"""
    res = subprocess.run(["clang", "-c", "-x", "c", "-ffreestanding", "--target=x86_64-none-unknown-elf",
                          "-march=native", "-", "-o", os.devnull], input=b"__bf16 f(__bf16 *x) { return x[0]; }",
                         capture_output=True)
    return res.returncode == 0


@pytest.mark.skipif(os.environ["DEV"] != "CPU" or shutil.which("clang") is None or os.uname().machine != "x86_64",
                    reason="compares the probe with clang on DEV=CPU (x86-64)")
def test_bfloat16_probe_agrees_with_clang():
    # on DEV=CPU tinygrad writes bfloat16 buffers as __bf16, which clang 14 refuses for x86-64
    # ("__bf16 is not supported on this target"): the probe must fail exactly when clang does,
    # with clang's own reason, and the CLI must turn it into one line before any training
    reason = devices.probe_dtype("bfloat16")
    if clang_has_bf16():
        assert reason is None
        return
    assert reason is not None and reason.startswith("clang: __bf16 is not supported"), reason
    from click.testing import CliRunner

    from cli import cli
    res = CliRunner().invoke(cli, ["bench", "--dim", "16", "--depth", "2", "--heads", "2", "--seq-len", "8",
                                   "--batch-size", "2", "--dtype", "bfloat16"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip() == (f"error: --dtype bfloat16 is not supported on CPU here ({reason}); use --dtype "
                                  f"float32 or another device (python cli.py devices)")


@pytest.fixture(scope="module")
def runs():
    """STEPS training steps of TINY (test_train's settings, so float32 reuses its kernels) in float32
    and in float16, same seed, same batches."""
    if devices.probe_dtype("float16") is not None:
        if os.environ["DEV"] in ("CPU", "CL"):
            pytest.fail("float16 worked on CPU and CL here: " + devices.probe_dtype("float16"))
        pytest.skip(f"float16 does not run on {os.environ['DEV']}")
    out = {}
    for dtype in ("float32", "float16"):
        cfg = TINY.replace(mask_prob=0.25, zloss_weight=1e-4, dtype=dtype)
        trainer, corpus = Trainer(cfg), Corpus(TEXT, cfg.seq_len)
        out[dtype] = trainer, [trainer.train_step(*trainer.next_batch(corpus)) for _ in range(STEPS)]
    return out


@pytest.mark.slow
def test_float16_training_is_close_to_float32(runs):
    # proves half training works (finite, falling, close to float32) and really is half (not identical)
    (_, ref), (_, half) = runs["float32"], runs["float16"]
    for k in ("total", "ce", "zloss", "grad_norm"):
        a, b = np.array([r[k] for r in ref]), np.array([r[k] for r in half])
        assert np.isfinite(b).all()
        np.testing.assert_allclose(b, a, rtol=REL, err_msg=k)
    assert half[-1]["ce"] < half[0]["ce"]
    assert any(r["zloss"] != s["zloss"] for r, s in zip(ref, half)), "float16 gave float32's exact numbers"


@pytest.mark.slow
def test_float16_run_keeps_float32_master_weights(runs):
    # the optimizer updates float32 weights and keeps float32 moments
    trainer, _ = runs["float16"]
    assert trainer.model.dtype == dtypes.float16
    assert all(t.dtype == dtypes.float32 for t in get_state_dict(trainer.model).values())
    moments = get_state_dict(trainer.opt)
    assert len(moments) >= 3 * len(trainer.params)   # the weights again, AdamW's m and v
    assert all(t.dtype == dtypes.float32 for t in moments.values())

@pytest.mark.slow
def test_half_checkpoint_loads_in_a_float32_run_and_sampler(runs, tmp_path):
    # a checkpoint of a float16 run holds float32 arrays; a float32 Trainer restores it exactly
    # and trains on; `sample` builds a float32 model from it unless told otherwise
    from tinyar.sample import load_model
    half, _ = runs["float16"]
    arrays = half.state_arrays()
    assert {a.dtype for a in arrays.values() if a.dtype.kind == "f"} == {np.dtype(np.float32)}
    path = ckpt.save(tmp_path, half.step, arrays, half.state_meta())
    saved, arrays, meta = ckpt.load(path)
    assert saved.dtype == "float16"
    trainer = Trainer(saved.replace(dtype="float32"))
    trainer.load_state(arrays, meta)
    for name, t in get_state_dict(trainer.model).items():
        np.testing.assert_array_equal(t.numpy(), arrays[f"model.{name}"])
    row = trainer.train_step(*trainer.next_batch(Corpus(TEXT, saved.seq_len)))
    assert trainer.step == STEPS + 1 and np.isfinite(row["total"])
    model, _ = load_model(tmp_path)
    assert model.cfg.dtype == "float32" and model.dtype == dtypes.float32
    assert load_model(tmp_path, "float16")[0].dtype == dtypes.float16


@pytest.mark.slow
def test_float16_model_samples_with_the_kv_cache(runs):
    # what `train` does after each validation: sample from the live float16 model. The cache holds
    # float16 keys and values; its logits match re-running the whole window (same dtype)
    from tinyar.kvcache import Window
    model = runs["float16"][0].model
    prompt = list(b"the qu")
    cached, full = Window(model, cache=True), Window(model, cache=False)
    a, b = [cached.start(prompt)], [full.start(prompt)]
    for token in b"ick b":   # past seq_len 8: the window slides once
        a.append(cached.append(token))
        b.append(full.append(token))
    a, b = np.array(a), np.array(b)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert cached.keys[0].dtype == dtypes.float16
    np.testing.assert_allclose(a, b, atol=REL * np.abs(b).max())
