"""`train --init-from`: a tinyar run starts from an x-transformers checkpoint of a configuration
tinyar implements (an export folder, any .safetensors state dict, or a torch.save'd one read with
weights_only=True), and anything else is refused in one line. Nothing here trains: the weights
are only moved, so nothing big compiles (the one CLI run that trains a step is marked slow).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tinygrad.nn.state import get_state_dict

from conftest import TEXT, TINY, TINY_FLAGS, TINY_NE, error_line, invoke
from test_export import assert_same_state
from test_parity import live
from tinyar import checkpoint as ckpt
from tinyar.export import ExportError, write_export
from tinyar.interop import to_x_transformers
from tinyar.model import Decoder
from tinyar.config import Config
from tinyar.xt_io import init_fields, init_model, init_weights


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    """An export folder of a fresh TINY_NE model (heads 2, seq_len 8) and its state dict; seed 3,
    so its weights differ from a fresh run's (seed 0)."""
    out = tmp_path_factory.mktemp("xt") / "export"
    state, args = to_x_transformers(Decoder(TINY_NE.replace(seed=3)))
    write_export(out, state, args)
    return out, state


def plain_safetensors(path: Path, state: dict) -> Path:
    """What `safetensors.torch.save_file(net.state_dict(), path)` writes: no tinyar metadata."""
    ckpt.write_atomic(path, state, {"format": "pt"})
    return path


def test_an_export_folder_or_its_file_carries_its_heads(exported):
    out, state = exported
    for where in (out, out / "model.safetensors"):
        model, args = init_model(where, heads=None)
        assert model.cfg.heads == 2 and args["Decoder"]["heads"] == 2
        assert_same_state(to_x_transformers(model)[0], state)


def test_a_plain_state_dict_needs_heads(exported, tmp_path):
    _, state = exported
    path = plain_safetensors(tmp_path / "net.safetensors", {f"module.net.{k}": v for k, v in state.items()})  # DDP + wrapper
    with pytest.raises(ExportError, match="pass --heads N"):
        init_model(path, heads=None)
    model, args = init_model(path, heads=2)
    assert args is None and model.cfg.seq_len == 8
    assert_same_state(to_x_transformers(model)[0], state)


@pytest.mark.parametrize("edit, heads, message", [
    (lambda s: s, 4, "--heads 4 differs from the 2 heads"),
    (lambda s: s | {"attn_layers.rotary_pos_emb.inv_freq": np.zeros(4, np.float32)}, None, "rotary_pos_emb"),
    (lambda s: s | {"token_emb.emb.weight": np.zeros((300, 16), np.float32),
                    "to_logits.weight": np.zeros((300, 16), np.float32)}, None, "vocabulary of 300 tokens"),
])
def test_what_tinyar_cannot_start_from_is_refused(exported, tmp_path, edit, heads, message):
    _, state = exported
    out = tmp_path / "edited"
    write_export(out, edit(dict(state)), to_x_transformers(Decoder(TINY_NE))[1])
    with pytest.raises(ExportError, match=message):
        init_model(out, heads=heads)


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        init_model(tmp_path / "nope.safetensors", heads=2)
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ExportError, match="expected a .safetensors file"):
        init_model(tmp_path / "w.npz", heads=2)
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ExportError, match="cannot read .* as safetensors"):
        init_model(tmp_path / "cut.safetensors", heads=2)


def test_the_config_takes_the_shape_from_the_weights_and_the_rest_from_the_command_line(exported):
    model, _ = init_model(exported[0], heads=None)
    cfg = Config(**init_fields(model.cfg, {"lr": 1e-3, "zloss_weight": 1e-4, "heads": 2}))
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.head_dim, cfg.seq_len, cfg.next_embed_head) == (16, 2, 2, 8, 8, True)
    assert (cfg.lr, cfg.zloss_weight, cfg.steps) == (1e-3, 1e-4, 300)
    with pytest.raises(ExportError, match="--dim 32 differs from the --init-from model's 16"):
        init_fields(model.cfg, {"dim": 32})


def test_init_weights_fills_a_fresh_trainer(exported, tmp_path):
    """Every weight copied; a next-embed head the checkpoint lacks stays at its initial values."""
    from tinyar.train import Trainer
    _, state = exported
    plain = plain_safetensors(tmp_path / "no_head.safetensors",
                              {k: v for k, v in state.items() if not k.startswith("to_next_embed_pred")})
    model, _ = init_model(plain, heads=2)
    trainer = Trainer(Config(**init_fields(model.cfg, {"next_embed_weight": 0.1})))
    fresh = {k: v.numpy() for k, v in get_state_dict(trainer.model).items()}
    assert init_weights(trainer, model) == ["next_embed.fc1.weight", "next_embed.fc2.weight"]
    got = {k: v.numpy() for k, v in get_state_dict(trainer.model).items()}
    for k, w in get_state_dict(model).items():
        np.testing.assert_array_equal(got[k], w.numpy(), err_msg=k)
    np.testing.assert_array_equal(got["next_embed.fc1.weight"], fresh["next_embed.fc1.weight"])
    assert not np.array_equal(got["tok_emb"], fresh["tok_emb"])


@live
@pytest.mark.slow
def test_a_torch_save_state_dict_is_read_with_weights_only(exported, tmp_path):
    import torch
    _, state = exported
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "net.pt")
    model, _ = init_model(tmp_path / "net.pt", heads=2)
    assert_same_state(to_x_transformers(model)[0], state)
    torch.save({"weights": Path("not a tensor")}, tmp_path / "pickled.pt")   # an arbitrary object: refused
    with pytest.raises(ExportError, match="weights_only=True"):
        init_model(tmp_path / "pickled.pt", heads=2)


def test_a_pt_file_without_torch_names_the_extra(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)
    (tmp_path / "net.pt").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"pip install -e '\.\[parity\]'"):
        init_model(tmp_path / "net.pt", heads=2)


# ---------------------------------------------------------------- python cli.py train --init-from





@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    """An export of a TINY model (no next-embed head: the train step's graph is the one the other
    CLI tests compile), seed 3."""
    out = tmp_path_factory.mktemp("xt") / "tiny"
    write_export(out, *to_x_transformers(Decoder(TINY.replace(seed=3))))
    return out


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT)
    return path


def test_init_from_bad_input(tiny_export, corpus, tmp_path):
    run = ["train", corpus, "--out", tmp_path / "run", "--steps", "1"]
    assert "pass only one of them" in error_line(invoke(*run, "--init-from", tiny_export, "--resume", tmp_path / "run"))
    assert "does not exist" in error_line(invoke(*run, "--init-from", tmp_path / "nope"))
    assert "--dim 32 differs from the --init-from model's 16" in error_line(
        invoke(*run, "--init-from", tiny_export, "--dim", "32"))
    plain = plain_safetensors(tmp_path / "net.safetensors", to_x_transformers(Decoder(TINY))[0])
    assert "pass --heads N" in error_line(invoke(*run, "--init-from", plain))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_starts_from_the_x_transformers_weights(tiny_export, corpus, tmp_path):
    """One step at a learning rate of 1e-12 leaves the weights where --init-from put them: the
    checkpoint holds the export's weights (not a fresh seed-0 model's), and the run resumes as usual."""
    out = tmp_path / "run"
    res = invoke("train", corpus, "--init-from", tiny_export, *TINY_FLAGS, "--steps", "1", "--lr", "1e-12",
                 "--out", out, "--sample-tokens", "0", "--eval-sample-tokens", "0")
    assert res.exit_code == 0, res.output
    assert f"initialised from {tiny_export}" in res.output
    arrays, meta = ckpt.read_safetensors(ckpt.latest(out))
    assert meta["step"] == 1 and meta["config"]["lr"] == 1e-12 and meta["init_from"] == str(tiny_export.resolve())
    want = get_state_dict(init_model(tiny_export, heads=None)[0])
    fresh = get_state_dict(Decoder(TINY))
    for k, w in want.items():
        np.testing.assert_allclose(arrays[f"model.{k}"], w.numpy(), rtol=0, atol=1e-6, err_msg=k)
    assert np.abs(arrays["model.tok_emb"] - fresh["tok_emb"].numpy()).max() > 1e-3
