"""tinyar/kernels.py: each hand-written backward gives the gradients tinygrad's own autograd
gives for the same forward (the loss oracles in test_loss.py check the whole model against
numpy; these pin each kernel down on its own, with the cases that take different paths)."""
import numpy as np
import pytest
from tinygrad import Tensor

from tinyar.kernels import embedding, matmul_wt
from tinyar.model import attend, attend_fused

RNG = np.random.default_rng(0)
B, H, T, DH = 2, 3, 8, 4


def grads(fn, leaves: list[np.ndarray], weights: list[np.ndarray | None], extra=()) -> list[np.ndarray]:
    """d/d leaves of sum_i (output_i * weights_i) (None: output i left out) -> outputs + gradients"""
    ts = [Tensor(a) for a in leaves]
    for t in ts:
        t.requires_grad = True
    outs = fn(*ts, *extra)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o * Tensor(w)).sum() for o, w in zip(outs, weights) if w is not None)
    loss.backward()
    # a leaf the loss does not reach (v when only lse is weighted) has no gradient: 0
    return [o.numpy() for o in outs] + [np.zeros_like(a) if t.grad is None else t.grad.numpy() for t, a in zip(ts, leaves)]


@pytest.mark.parametrize("zloss_on", [True, False, "only"], ids=["with-dlse", "no-dlse", "only-dlse"])
@pytest.mark.parametrize("fcm", [False, True], ids=["causal", "fcm"])
def test_attention_backward_equals_autograd(zloss_on, fcm):
    # no-dlse: tinygrad passes only d out when lse is unused (z-loss off); only-dlse: only d lse
    # (the z-loss's gradient alone, as --grad-share takes it: the last layer's output never
    # reaches the z-loss). The backward tells them apart by rank; a missing one counts as 0
    q, k, v = (RNG.standard_normal((B, H, T, DH)).astype(np.float32) for _ in range(3))
    hidden = np.zeros((B, T), bool)
    hidden[0, 3] = hidden[1, 5] = hidden[1, 6] = fcm
    w_out = None if zloss_on == "only" else RNG.standard_normal((B, H, T, DH)).astype(np.float32)
    w_lse = RNG.standard_normal((B, H, T)).astype(np.float32) if zloss_on else None
    extra = (Tensor(hidden),) if fcm else ()
    want = grads(attend, [q, k, v], [w_out, w_lse, None], extra)
    got = grads(attend_fused, [q, k, v], [w_out, w_lse, None], extra)
    for name, a, b in zip(("out", "lse", "probs", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    if fcm:  # a hidden key gets no gradient through the scores: its k row's gradient is 0
        assert np.abs(got[4][0, :, 3]).max() == 0 and np.abs(got[4][1, :, 5:7]).max() == 0


def test_matmul_wt_and_embedding_backward_equal_autograd():
    x, w = RNG.standard_normal((2, 5, 6)).astype(np.float32), RNG.standard_normal((7, 6)).astype(np.float32)
    wy = RNG.standard_normal((2, 5, 7)).astype(np.float32)
    for a, b in zip(grads(matmul_wt, [x, w], [wy]), grads(lambda x, w: x @ w.T, [x, w], [wy])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    table, ids = RNG.standard_normal((9, 4)).astype(np.float32), Tensor(np.array([[1, 3, 3], [8, 0, 1]], np.int32))
    wr = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    got = grads(lambda t: embedding(t, ids), [table], [wr])
    want = grads(lambda t: t[ids], [table], [wr])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
