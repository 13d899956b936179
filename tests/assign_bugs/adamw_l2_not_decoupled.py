"""Classic mistake: the weight decay is added to the gradient (L2 regularisation, as in
Adam), so it goes through the moments; AdamW decays the weights separately. Must fail task
adamw only."""
from tinyar.assignments.training import adamw_step  # noqa: F401
from tinyar.train import clip_grad_norm_, lr_at  # noqa: F401

ASSIGNMENT = "training"


def adamw_step(p, g, m, v, step, lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g * g)
    m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    return p - lr * m_hat / (v_hat.sqrt() + eps), m, v
