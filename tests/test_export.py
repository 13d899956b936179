"""Leaving for PyTorch: tinyar -> x-transformers gives the same numbers, x-transformers -> tinyar ->
x-transformers gives the same state dict, `python cli.py export` writes what x-transformers loads,
and the DDP recipe (tinyar/ddp_continue.py) runs on 2 processes.

No new tinygrad graphs: the numbers come from conftest's `tiny` runs (shared with test_loss.py),
the round trips only move arrays. The live tests need the `parity` extra (torch, x-transformers).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tinygrad import Tensor
from tinygrad.nn.state import get_state_dict

from conftest import KIND, NEXT_EMBED_WEIGHT, TEXT, TINY, TINY_NE, ZLOSS_WEIGHT, error_line, invoke
from test_parity import FIXTURE, NO_XT, live, rel
from tinyar import checkpoint as ckpt
from tinyar.data import PAD
from tinyar.export import ARGS, MOMENTS, WEIGHTS, adam_moments, constructor_args
from tinyar.interop import from_x_transformers, parameter_names, to_x_transformers
from tinyar.model import Decoder

ROOT = Path(__file__).parent.parent


def fixture_weights() -> dict[str, np.ndarray]:
    """x-transformers' float32 state dict in tests/parity/fixture.npz (dim 16, 2 layers, 2 heads)."""
    f = np.load(FIXTURE)
    return {k[len("weight/"):]: f[k] for k in f.files if k.startswith("weight/")}


def assert_same_state(got: dict, want: dict) -> None:
    """Same names and shapes; renamed tensors bit for bit. A LayerNorm gamma passes through tinyar as
    1 + gamma in float32, which keeps it to half a float32 step of 1 + gamma (~6e-8)."""
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        assert got[k].shape == w.shape and got[k].dtype == np.float32, k
        if k.endswith("gamma"):
            assert (np.abs(got[k] - w) <= np.spacing(np.abs(w) + 1) / 2).all(), k
        else:
            np.testing.assert_array_equal(got[k], w, err_msg=k)


# ---------------------------------------------------------------- round trips (no torch needed)

def test_x_transformers_to_tinyar_to_x_transformers_is_the_same_state_dict():
    weights = fixture_weights()
    state, args = to_x_transformers(from_x_transformers(weights, heads=2))
    assert_same_state(state, weights)
    assert args["Decoder"] == {"dim": 16, "depth": 2, "heads": 2, "attn_dim_head": 8}
    assert args["TransformerWrapper"] == {"num_tokens": 258, "max_seq_len": 9, "add_continuous_pred_head": True}


def test_one_head_keeps_x_transformers_default_unless_the_projection_was_trained():
    """x-transformers builds no output projection for one head; tinyar holds the identity there.
    An identity goes back out as no projection; a trained one as attn_project_out=True."""
    weights = {k: v for k, v in fixture_weights().items() if not k.endswith("to_out.weight")}
    model = from_x_transformers(weights, heads=1)
    state, args = to_x_transformers(model)
    assert_same_state(state, weights)
    assert "attn_project_out" not in args["Decoder"]
    trained = model.blocks[1].attn.to_out.weight
    trained.assign(trained + 0.01).realize()
    state, args = to_x_transformers(model)
    assert args["Decoder"]["attn_project_out"] is True
    np.testing.assert_allclose(state["attn_layers.layers.2.1.to_out.weight"], np.eye(16) + 0.01, atol=1e-7)


def test_tinyar_to_x_transformers_to_tinyar_is_the_same_model(tiny):
    state, _ = to_x_transformers(tiny.model)
    back = get_state_dict(from_x_transformers(state, heads=tiny.cfg.heads))
    assert sorted(back) == sorted(tiny.weights)
    for k, w in tiny.weights.items():   # gammas: (w - 1) + 1 is within one float32 step of w
        np.testing.assert_allclose(back[k].numpy(), w, rtol=0, atol=np.spacing(np.abs(w).max()) if "norm" in k else 0)


@pytest.mark.parametrize("settings, wrapper, note", [
    (dict(mask_prob=0.25, mask_mode="fcm", zloss_weight=1e-4),
     dict(mask_prob=0.25, add_attn_z_loss=True, next_embed_loss_weight=0.0), None),
    (dict(mask_prob=0.15, mask_mode="replace"), dict(mask_prob=0.0, add_attn_z_loss=False), "replace mode"),
    (dict(next_embed_weight=0.1), dict(next_embed_loss_weight=0.1), "different loss from this run's MSE"),
    (dict(next_embed_weight=0.1, next_embed_kind="l1"), dict(next_embed_loss_weight=0.1), "only by the position row"),
    (dict(dtype="bfloat16"), dict(mask_prob=0.0), "bfloat16 matmuls"),
])
def test_constructor_arguments_and_notes_follow_the_loss_settings(settings, wrapper, note):
    args = constructor_args(TINY.replace(**settings))
    assert args["AutoregressiveWrapper"].items() >= (wrapper | {"ignore_index": PAD, "pad_value": PAD}).items()
    assert args["forward"] == ({"attn_z_loss_weight": 1e-4} if "zloss_weight" in settings else {})
    assert args["TransformerWrapper"]["add_continuous_pred_head"] == ("next_embed_weight" in settings)
    extra = [n for n in args["notes"] if not n.startswith(("windows:", "position table:"))]   # every run has these two
    assert len(extra) == (1 if note else 0) and (not note or note in extra[0]), extra


def save_run(folder: Path, cfg, step: int = 7) -> Decoder:
    """A run folder with one checkpoint of a fresh Trainer (no training step: nothing big compiles),
    its 1-d weights and AdamW's moments filled with random numbers (v > 0)."""
    from tinyar.train import Trainer
    trainer = Trainer(cfg)
    rng = np.random.default_rng(1)
    for t in get_state_dict(trainer.model).values():   # gammas and biases start at 1 and 0: make them matter
        if t.ndim < 2:
            t.assign(Tensor(rng.normal(1.0, 0.2, t.shape).astype(np.float32))).realize()
    arrays = trainer.state_arrays()
    for k, a in arrays.items():
        if ".m." in k or ".v." in k:
            arrays[k] = (rng.normal(size=a.shape) if ".m." in k else rng.uniform(0.5, 2, a.shape)).astype(np.float32)
    ckpt.save(folder, step, arrays, {"config": cfg.to_dict(), "step": step, "rng": {}})
    return trainer.model


def test_a_run_folder_exports_its_newest_checkpoint(tmp_path):
    model = save_run(tmp_path / "run", TINY.replace(zloss_weight=1e-3))
    state, args = to_x_transformers(tmp_path / "run")
    assert args["step"] == 7 and args["forward"] == {"attn_z_loss_weight": 1e-3}
    assert_same_state(state, to_x_transformers(model)[0])


def test_adam_moments_follow_their_parameters(tmp_path):
    """Each exported moment is the one tinyar kept for that parameter (AdamW 0: matrices, AdamW 1:
    vectors, in model order); the position table's gradient is tinyar's * dim**-0.5 (x-transformers
    stores the table dim**0.5 times larger), so m scales by 1/4 and v by 1/16 at dim 16."""
    save_run(tmp_path / "run", TINY)
    arrays, _ = ckpt.read_safetensors(ckpt.latest(tmp_path / "run"))
    names = [k.removeprefix("model.") for k in arrays if k.startswith("model.")]
    matrices, vectors = [n for n in names if arrays[f"model.{n}"].ndim >= 2], [n for n in names if arrays[f"model.{n}"].ndim < 2]
    mv = adam_moments(tmp_path / "run")
    for xt, ours in parameter_names(TINY.depth, False).items():
        g, i = (0, matrices.index(ours)) if ours in matrices else (1, vectors.index(ours))
        scale = 0.25 if ours == "pos_emb" else 1.0
        np.testing.assert_array_equal(mv[f"exp_avg.{xt}"], arrays[f"optim.optimizers.{g}.m.{i}"] * np.float32(scale))
        np.testing.assert_array_equal(mv[f"exp_avg_sq.{xt}"], arrays[f"optim.optimizers.{g}.v.{i}"] * np.float32(scale ** 2))
    assert len(mv) == 2 * len(names)


# ---------------------------------------------------------------- python cli.py export





@pytest.fixture
def run(tmp_path) -> Path:
    save_run(tmp_path / "run", TINY_NE.replace(mask_prob=0.25, next_embed_weight=0.1))
    return tmp_path / "run"


def test_export_writes_weights_and_arguments(run, tmp_path):
    res = invoke("export", run, "--to", "x-transformers", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "note: masking: tinyar's replace mode" in res.output and "note: next-embed" in res.output
    arrays, tags = ckpt.parse_safetensors((tmp_path / "out" / WEIGHTS).read_bytes())
    assert_same_state(arrays, to_x_transformers(run)[0])
    args = json.loads((tmp_path / "out" / ARGS).read_text())
    assert json.loads(tags["x_transformers"]) == args == json.loads(json.dumps(to_x_transformers(run)[1]))


def test_export_bad_input(run, tmp_path):
    assert "does not exist" in error_line(invoke("export", tmp_path / "nope", tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    assert "no checkpoint" in error_line(invoke("export", tmp_path / "empty", tmp_path / "o"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ckpt-00000001.safetensors").write_bytes(b"\x00" * 20)
    assert "truncated or corrupted" in error_line(invoke("export", bad, tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_an_existing_out_is_refused_without_force(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert "already exists; pass --force" in error_line(invoke("export", run, out))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert invoke("export", run, out, "--force").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([ARGS, MOMENTS, WEIGHTS, "notes.txt"])   # nothing else touched
    (tmp_path / "file").write_text("x")
    assert "is a file" in error_line(invoke("export", run, tmp_path / "file", "--force"))


def test_verify_without_torch_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)   # `import torch` now fails as if not installed
    line = error_line(invoke("export", run, tmp_path / "out", "--verify"))
    assert "pip install -e '.[parity]'" in line and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- live (torch + x-transformers)

@pytest.fixture(scope="module")
def xt():
    if NO_XT:
        pytest.skip(NO_XT)
    import torch
    import x_transformers
    return torch, x_transformers


def x_net(xt, args, state, dtype="float64"):
    """TransformerWrapper built from the exported arguments, state loaded strictly."""
    torch, x = xt
    net = x.TransformerWrapper(**args["TransformerWrapper"], attn_layers=x.Decoder(**args["Decoder"]))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net.to(getattr(torch, dtype)).eval()


@live
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fcm", "replace"])
def test_tinyar_to_x_transformers_gives_the_same_numbers(tiny, xt, mode, capsys):
    """conftest's tiny run (PAD targets, a fixed mask, z-loss and next-embed weighted in), exported:
    x-transformers computes the same logits, prediction and every loss component (tinyar's definitions
    of the next-embed target and of replace masking, which the wrapper lacks, rebuilt in torch)."""
    torch, _ = xt
    ours = tiny.run(mode)
    state, args = to_x_transformers(tiny.model)
    net = x_net(xt, args, state)
    tokens = torch.from_numpy(tiny.tokens.astype(np.int64))
    inp, tgt = torch.from_numpy(ours["inp"].astype(np.int64)), tokens[:, 1:]   # inp: MASK where replaced
    keep = None if mode == "replace" else torch.from_numpy(~ours["hidden_keys"])
    with torch.no_grad():
        (logits, (pred, _)), inter = net(inp, self_attn_kv_mask=keep, return_attn_z_loss=True,
                                         attn_z_loss_weight=1.0, return_next_embed_pred=True)
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD)
        err = pred - net.token_emb.emb.weight[tgt]
        err = err.abs() if KIND[mode] == "l1" else err ** 2
        ne = err[tgt != PAD].mean()
        theirs = {"ce": ce.item(), "zloss": inter.attn_z_loss.item(), "next_embed": ne.item(),
                  "total": (ce + ZLOSS_WEIGHT * inter.attn_z_loss + NEXT_EMBED_WEIGHT * ne).item()}
    diffs = {k: rel(ours["loss"][k], v) for k, v in theirs.items()}
    diffs |= {"logits": rel(ours["logits"], logits.numpy()), "pred": rel(ours["pred"], pred.numpy())}
    with capsys.disabled():
        print(f"\n  {mode}: " + ", ".join(f"{k} {d:.1e}" for k, d in diffs.items()))
    assert all(d < 1e-5 for d in diffs.values()), diffs


@live
@pytest.mark.slow
def test_the_wrapper_arguments_do_what_the_notes_say(tiny, xt):
    """AutoregressiveWrapper(net, **args) on a seq_len window: ce over targets != PAD, the fcm rule
    (k = min(floor(n*p), n-1) hidden keys per row, never position 0), z-loss weighted once by
    forward's attn_z_loss_weight, and x-transformers' own L1 next-embed (target + position row)."""
    torch, x = xt
    cfg = TINY_NE.replace(mask_prob=0.3, mask_mode="fcm", zloss_weight=0.05, next_embed_weight=0.3,
                          next_embed_kind="l1")
    state, _ = to_x_transformers(tiny.model)
    args = constructor_args(cfg)
    net = x_net(xt, args, state)
    wrapper = x.AutoregressiveWrapper(net, **args["AutoregressiveWrapper"])
    window = torch.from_numpy(tiny.tokens[:, :args["window"]].astype(np.int64))   # 8 tokens, 7 targets
    seen = {}
    hook = net.register_forward_pre_hook(lambda m, a, kw: seen.update(kv=kw["self_attn_kv_mask"]), with_kwargs=True)
    with torch.no_grad():
        loss = wrapper(window, **args["forward"]).item()
        hook.remove()
        kv = seen["kv"]
        assert (kv[:, 0].all() and ((~kv).sum(1) == 2).all()), kv   # floor(8 * 0.3) = 2 hidden keys
        (logits, (pred, _)), inter = net(window, self_attn_kv_mask=kv, return_attn_z_loss=True,
                                         attn_z_loss_weight=1.0, return_next_embed_pred=True)
        tgt = window[:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tgt, ignore_index=PAD)
        target = net.token_emb.emb.weight[tgt] + net.pos_emb.emb.weight[1:8] * 16 ** -0.5
        l1 = (pred[:, :-1] - target).abs()[tgt != PAD].mean()
    assert rel(loss, (ce + 0.05 * inter.attn_z_loss + 0.3 * l1).item()) < 1e-9


@live
@pytest.mark.slow
@pytest.mark.parametrize("shape", [
    dict(dim=16, depth=1, heads=1, dim_head=16, vocab=300, seq_len=64, next_embed=False),
    dict(dim=16, depth=3, heads=4, dim_head=64, vocab=258, seq_len=9, next_embed=True),
])
def test_fresh_x_transformers_models_round_trip(xt, shape):
    """Fresh x-transformers weights of test_parity's live shapes (one head; dim_head 4x the width):
    through tinyar and back to the same state dict, and the arguments rebuild the same module."""
    import make_fixture
    _, state = make_fixture.build(**shape, seed=5)
    back, args = to_x_transformers(from_x_transformers(state, heads=shape["heads"]))
    assert_same_state(back, state)
    x_net(xt, args, back)   # strict load: every name and shape the arguments build is there


@live
@pytest.mark.slow
def test_the_export_file_loads_with_safetensors_torch(run, tmp_path, xt):
    torch, _ = xt
    safetensors_torch = pytest.importorskip("safetensors.torch")
    assert invoke("export", run, tmp_path / "out").exit_code == 0
    loaded = safetensors_torch.load_file(tmp_path / "out" / WEIGHTS)
    args = json.loads((tmp_path / "out" / ARGS).read_text())
    net = x_net(xt, args, {k: v.numpy() for k, v in loaded.items()})
    assert_same_state({k: v.float().numpy() for k, v in net.state_dict().items()}, to_x_transformers(run)[0])


@live
@pytest.mark.slow
def test_the_recipe_continues_adamw_where_tinyar_left_it(run, tmp_path, xt):
    """tinyar/ddp_continue.make_optimizer with the exported moments and step takes tinyar's AdamW
    step (tinygrad's rule, in numpy: bias corrections at step + 1, decay on matrices only)."""
    torch, _ = xt
    pytest.importorskip("safetensors")
    sys.path.insert(0, str(ROOT / "tinyar"))
    from ddp_continue import make_optimizer
    state, args = to_x_transformers(run)
    moments = adam_moments(run)
    net = x_net(xt, args, state, "float32")
    opt = make_optimizer(net, args, {k: torch.from_numpy(v) for k, v in moments.items()}, args["step"])
    rng = np.random.default_rng(2)
    grads = {n: rng.normal(size=q.shape).astype(np.float32) for n, q in net.named_parameters()}
    for n, q in net.named_parameters():
        q.grad = torch.from_numpy(grads[n])
    opt.step()
    o, t = args["optimizer"]["AdamW"], args["step"] + 1
    (b1, b2), worst = o["betas"], 0.0
    for n, q in net.named_parameters():
        g, w = grads[n].astype(np.float64), state[n].astype(np.float64)
        m = b1 * moments[f"exp_avg.{n}"] + (1 - b1) * g
        v = b2 * moments[f"exp_avg_sq.{n}"] + (1 - b2) * g * g
        up = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + o["eps"]) + (o["weight_decay"] * w if w.ndim >= 2 else 0)
        worst = max(worst, rel(q.detach().numpy() - state[n], -o["lr"] * up))
    assert worst < 1e-4, worst


@live
@pytest.mark.slow
def test_verify_compares_logits(run, tmp_path):
    """--verify runs tinyar's forward (one new graph: tens of seconds here) and x-transformers'."""
    res = invoke("export", run, tmp_path / "out", "--verify")
    assert res.exit_code == 0 and "(ok)" in res.output, res.output


@live
@pytest.mark.slow
def test_ddp_recipe_continues_on_two_processes(run, tmp_path):
    """The README's recipe: torchrun, 2 processes, CPU gloo. Both replicas end identical, the losses
    are finite, and the result is an export again (it starts a tinyar model with its own heads)."""
    pytest.importorskip("safetensors")
    from tinyar.xt_io import init_model
    assert invoke("export", run, tmp_path / "out").exit_code == 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(ROOT / "tinyar" / "ddp_continue.py"), str(tmp_path / "out"), str(corpus), "--steps", "4",
           "--log-every", "2", "--out", str(tmp_path / "torch_run")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    losses = [float(line.split()[3]) for line in res.stdout.splitlines() if line.startswith("step ")]
    assert len(losses) == 2 and all(np.isfinite(losses)), res.stdout
    assert "replicas identical: True" in res.stdout and "continuing from step 7 on 2 process(es)" in res.stdout
    model, args = init_model(tmp_path / "torch_run", heads=None)
    assert args["step"] == 11 and model.cfg.heads == 2
    before = ckpt.parse_safetensors((tmp_path / "out" / WEIGHTS).read_bytes())[0]["token_emb.emb.weight"]
    assert np.abs(get_state_dict(model)["tok_emb"].numpy() - before).max() > 1e-4   # it trained
