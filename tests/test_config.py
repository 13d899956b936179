"""Config.validate: each bad setting is a one-line ConfigError naming its CLI flag."""
from __future__ import annotations

import pytest

from tinyar.config import Config, ConfigError


def test_defaults_and_edges_are_valid():
    # proves the defaults validate and the edges of each range are accepted
    assert Config().validate() == Config()
    for ok in (dict(mask_prob=0.0), dict(mask_prob=0.99), dict(zloss_weight=0.0), dict(next_embed_weight=0.0),
               dict(dim=16, heads=4), dict(dim=16, heads=3, dim_head=8), dict(mask_mode="fcm"),
               dict(next_embed_kind="l1")):
        Config(**ok).validate()


@pytest.mark.parametrize("bad, flag", [
    (dict(mask_prob=1.0), "--mlm"), (dict(mask_prob=-0.1), "--mlm"), (dict(mask_prob=1.5), "--mlm"),
    (dict(zloss_weight=-1e-4), "--zloss"), (dict(next_embed_weight=-0.1), "--next-embed"),
    (dict(dim=16, heads=3), "--heads"), (dict(dim=10, heads=4), "--dim"),
    (dict(mask_mode="bert"), "--mlm-mode"), (dict(next_embed_kind="l2"), "--next-embed-loss"),
    (dict(seq_len=1), "--seq-len"), (dict(lr=0.0), "--lr"), (dict(dtype="half"), "--dtype"),
])
def test_bad_setting_raises_config_error_naming_the_flag(bad, flag):
    # proves each out-of-range setting is refused with a one-line message naming its flag
    with pytest.raises(ConfigError) as e:
        Config(**bad).validate()
    msg = str(e.value)
    assert flag in msg and "\n" not in msg
    assert isinstance(e.value, ValueError)


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
