"""Config.validate: each bad setting is a one-line ConfigError naming its CLI flag."""
from __future__ import annotations

import dataclasses

import pytest

from tinyar.config import NO_FLAG, OPTIONS, TRAIN_ONLY, Config, ConfigError, flag


def test_defaults_and_edges_are_valid():
    # proves the defaults validate and the edges of each range are accepted
    assert Config().validate() == Config()
    for ok in (dict(mask_prob=0.0), dict(mask_prob=0.99), dict(zloss_weight=0.0), dict(next_embed_weight=0.0),
               dict(dim=16, heads=4), dict(dim=16, heads=3, dim_head=8), dict(mask_mode="fcm"),
               dict(next_embed_kind="l1")):
        Config(**ok).validate()


@pytest.mark.parametrize("bad, field", [
    (dict(mask_prob=1.0), "mask_prob"), (dict(mask_prob=-0.1), "mask_prob"), (dict(mask_prob=1.5), "mask_prob"),
    (dict(zloss_weight=-1e-4), "zloss_weight"), (dict(next_embed_weight=-0.1), "next_embed_weight"),
    (dict(dim=16, heads=3), "heads"), (dict(dim=10, heads=4), "dim"),
    (dict(mask_mode="bert"), "mask_mode"), (dict(next_embed_kind="l2"), "next_embed_kind"),
    (dict(seq_len=1), "seq_len"), (dict(lr=0.0), "lr"), (dict(dtype="half"), "dtype"),
    (dict(eval_batches=0), "eval_batches"), (dict(min_lr_ratio=2.0), "min_lr_ratio"),
])
def test_bad_setting_raises_config_error_naming_the_flag(bad, field):
    # proves each out-of-range setting is refused with a one-line message naming its option as the
    # CLI spells it (config.OPTIONS), or the field itself when it has no option
    with pytest.raises(ConfigError) as e:
        Config(**bad).validate()
    msg = str(e.value)
    assert flag(field) in msg and "\n" not in msg
    assert flag(field).startswith("--") == (field in OPTIONS)
    assert isinstance(e.value, ValueError)


def test_every_field_has_an_option_or_a_stated_reason_and_train_offers_each_option():
    # proves "options mirror fields": OPTIONS and NO_FLAG split the fields exactly, and `train`
    # and `bench` accept every option in OPTIONS (a flag renamed in one place only fails here)
    from click.testing import CliRunner

    from cli import cli
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(OPTIONS) | set(NO_FLAG) == fields and not set(OPTIONS) & set(NO_FLAG)
    assert set(NO_FLAG) == {"vocab", "next_embed_head"}   # everything a user may set has a flag
    for command in ("train", "bench"):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        used = [f for f in OPTIONS if command == "train" or f not in TRAIN_ONLY]
        assert all(f"{OPTIONS[f][0]} " in text for f in used)
        assert all(f"{OPTIONS[f][0]} " not in text for f in set(OPTIONS) - set(used))   # bench: only its flags
        assert all(f"--{field.replace('_', '-')} " not in text for field in NO_FLAG)
    assert {"--eval-batches", "--min-lr-ratio", "--dim-head"} <= {name for name, _ in OPTIONS.values()}


@pytest.mark.parametrize("args, expect", [
    (["--eval-batches", "0"], "--eval-batches must be at least 1"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio must be in [0, 1]"),
    (["--dim-head", "-1"], "--dim-head must be >= 0"),
])
def test_new_flags_reach_their_config_fields(args, expect):
    # proves each flag sets its field: the field's own range check answers, naming the flag
    from click.testing import CliRunner

    from cli import cli
    res = CliRunner().invoke(cli, ["train", *args, "--out", "/nonexistent/never-created"])
    assert res.exit_code == 2 and expect in res.output, res.output


def test_heads_error_suggests_heads_that_divide_dim():
    # proves the heads/dim error offers a fix, and every suggested head count does divide dim
    with pytest.raises(ConfigError) as e:
        Config(dim=24, heads=5).validate()
    suggested = [int(n) for n in str(e.value).split("[")[1].split("]")[0].split(",")]
    assert suggested and all(24 % h == 0 for h in suggested)


def test_from_dict_round_trip_and_unknown_fields():
    # proves a saved config reloads equal, and an unknown field is an error, not ignored
    cfg = Config(dim=32, mask_prob=0.15, mask_mode="fcm")
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown"):
        Config.from_dict({**cfg.to_dict(), "bogus": 1})


def test_from_dict_refuses_a_value_of_the_wrong_type():
    # proves a checkpoint's {"dim": "32"} is an error on load, not a TypeError deep in validate()
    good = Config().to_dict()
    for field, value, kind in (("dim", "32", "str"), ("dim", 32.0, "float"), ("steps", True, "bool"),
                               ("lr", "3e-3", "str"), ("mask_mode", 1, "int"), ("grad_share", 0, "int")):
        with pytest.raises(ConfigError, match=f"config field {field} is {value!r} \\({kind}\\), not "):
            Config.from_dict({**good, field: value})
    assert Config.from_dict({**good, "lr": 1}).lr == 1.0                  # an int where a float goes is fine
