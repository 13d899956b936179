"""Shared test settings.

tinygrad spends tens of seconds generating kernels for every new graph shape, so the whole
suite shares a few tiny configurations: use TINY (and TINY_NE when a next-embed head is
needed) rather than inventing new shapes. The device comes from TINYAR_TEST_DEVICE
(default CPU), so the suite can run on any backend: TINYAR_TEST_DEVICE=CL pytest.
"""
import os

os.environ["DEV"] = os.environ.get("TINYAR_TEST_DEVICE", os.environ.get("DEV", "CPU"))

import pytest  # noqa: E402

from tinyar.config import Config  # noqa: E402

# the one model shape most tests use: B=2, T=8, D=16, 2 layers, 2 heads
TINY = Config(dim=16, depth=2, heads=2, seq_len=8, batch_size=2, steps=40, warmup=4, lr=1e-2,
              eval_every=20, eval_batches=1, log_every=10, save_every=20)
TINY_NE = TINY.replace(next_embed_head=True)


@pytest.fixture(scope="session")
def tiny_cfg() -> Config:
    return TINY
