"""Plain-numpy reference for every loss piece and for the decoder: the spec, written as loops.

Independent of tinygrad and of tinyar's code (only the weight *names* of a Decoder are
shared, see `decoder_forward`). Everything is float64 and written with explicit loops over
batch b, position t, head h and key j, so each line can be checked against the definitions
in the README ("The loss"). Slow on purpose; use it on tiny shapes only.
"""
from __future__ import annotations

import math

import numpy as np

MASK, PAD = 256, 257  # the two special ids after the 256 bytes (README, "The loss")


# ---------------------------------------------------------------- small pieces
def log_softmax(row: np.ndarray) -> np.ndarray:
    """log softmax of one vector, max subtracted first so 1000x logits stay finite. (V,) -> (V,)"""
    row = np.asarray(row, np.float64)
    m = row.max()
    return row - m - math.log(np.exp(row - m).sum())


def logsumexp(values: list[float]) -> float:
    """log sum exp of a non-empty list of scalars."""
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), elementwise."""
    return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in np.ravel(x)]).reshape(np.shape(x))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def layernorm(x: np.ndarray, weight: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """One vector: (x - mean) / sqrt(biased var + eps) * weight, no bias. (D,) -> (D,)"""
    mu = x.mean()
    var = ((x - mu) ** 2).mean()
    return (x - mu) / math.sqrt(var + eps) * weight


# ---------------------------------------------------------------- loss pieces
def cross_entropy(logits, tgt, pad: int = PAD) -> float:
    """Mean over (b,t) with tgt != pad of -log softmax(logits[b,t])[tgt[b,t]]. 0 if none valid."""
    logits, tgt = np.asarray(logits, np.float64), np.asarray(tgt)
    B, T, _ = logits.shape
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if tgt[b, t] == pad:
                continue
            total += -log_softmax(logits[b, t])[tgt[b, t]]
            n += 1
    return total / n if n else 0.0


def cross_entropy_grad(logits, tgt, pad: int = PAD) -> np.ndarray:
    """Analytic d(cross_entropy)/d(logits): (softmax - onehot(tgt)) / n_valid at valid rows, 0 elsewhere."""
    logits, tgt = np.asarray(logits, np.float64), np.asarray(tgt)
    B, T, _ = logits.shape
    n = int((tgt != pad).sum())
    g = np.zeros_like(logits)
    for b in range(B):
        for t in range(T):
            if tgt[b, t] == pad:
                continue
            g[b, t] = np.exp(log_softmax(logits[b, t]))
            g[b, t, tgt[b, t]] -= 1.0
            g[b, t] /= n
    return g


def attention(q, k, v, hidden_keys=None):
    """Causal softmax attention, one (b, h, query i) at a time.

    q, k, v (B,H,T,Dh); hidden_keys (B,T) bool or None -> out (B,H,T,Dh), lse (B,H,T).
    Query i sees key j iff j <= i and key j is not hidden. lse[b,h,i] is the log-sum-exp of
    the scaled scores q_i.k_j / sqrt(Dh) over exactly those keys (the z-loss's quantity)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, H, T, Dh = q.shape
    out, lse = np.zeros_like(q), np.zeros((B, H, T))
    for b in range(B):
        for h in range(H):
            for i in range(T):
                keys = [j for j in range(i + 1) if hidden_keys is None or not hidden_keys[b, j]]
                scores = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(Dh) for j in keys]
                lse[b, h, i] = logsumexp(scores)
                for s, j in zip(scores, keys):
                    out[b, h, i] += math.exp(s - lse[b, h, i]) * v[b, h, j]
    return out, lse


def zloss(lses) -> float:
    """mean over (b, i) of sum_h (sum_l lse_l[b,h,i])^2: layers summed *before* squaring."""
    lses = [np.asarray(a, np.float64) for a in lses]
    B, H, T = lses[0].shape
    total = 0.0
    for b in range(B):
        for i in range(T):
            for h in range(H):
                s = sum(lse[b, h, i] for lse in lses)
                total += s * s
    return total / (B * T)


def zloss_per_layer_squared(lses) -> float:
    """The classic mistake, for contrast: squares each layer's lse, then sums layers."""
    return sum(zloss([lse]) for lse in lses)


def zloss_grad(lses) -> list[np.ndarray]:
    """Analytic d(zloss)/d(lse_l) = 2 * sum_l' lse_l' / (B*T), the same for every layer l."""
    s = sum(np.asarray(a, np.float64) for a in lses)
    B, _, T = s.shape
    return [2.0 * s / (B * T) for _ in lses]


def next_embed(pred, target, tgt, kind: str = "mse", pad: int = PAD) -> float:
    """Mean over valid positions (tgt != pad) x all D dims of (pred-target)^2 or |pred-target|."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    B, T, D = pred.shape
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T):
            if tgt[b, t] == pad:
                continue
            for d in range(D):
                e = pred[b, t, d] - target[b, t, d]
                total += e * e if kind == "mse" else abs(e)
                n += 1
    return total / n if n else 0.0


def next_embed_grad(pred, target, tgt, kind: str = "mse", pad: int = PAD) -> np.ndarray:
    """Analytic d(next_embed)/d(pred): 2(pred-target)/n or sign(pred-target)/n at valid rows."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    valid = (np.asarray(tgt) != pad)[..., None]
    n = valid.sum() * pred.shape[-1]
    e = pred - target
    return np.where(valid, 2.0 * e if kind == "mse" else np.sign(e), 0.0) / n


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function f of array x, one entry at a time."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f(x)
        x[idx] = old - eps
        fm = f(x)
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


# ---------------------------------------------------------------- the decoder
def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """One vector through a torch-layout weight: W (out, in) @ x (+ b). (in,) -> (out,)"""
    y = w @ x
    return y + b if b is not None else y


def decoder_forward(W: dict, inp, heads: int, hidden_keys=None):
    """Whole decoder forward from its weights, position by position.

    W maps tinyar's Decoder state-dict names to float arrays; inp (B,T) ints; hidden_keys
    (B,T) bool or None (fcm). -> logits (B,T,V), [lse (B,H,T)] per layer, hidden (B,T,D).

    token emb + position emb; per block: x += Attn(LN(x)); x += W2 gelu(W1 LN(x) + b1) + b2;
    hidden = LN(x); logits = head(hidden)."""
    W = {k: np.asarray(v, np.float64) for k, v in W.items()}
    inp = np.asarray(inp)
    B, T = inp.shape
    D = W["tok_emb"].shape[1]
    depth = len({k.split(".")[1] for k in W if k.startswith("blocks.")})
    x = np.zeros((B, T, D))
    for b in range(B):
        for t in range(T):
            x[b, t] = W["tok_emb"][inp[b, t]] + W["pos_emb"][t]
    lses = []
    for l in range(depth):
        p = f"blocks.{l}."
        inner = W[p + "attn.to_q.weight"].shape[0]
        Dh = inner // heads
        q, k, v = (np.zeros((B, heads, T, Dh)) for _ in range(3))
        for b in range(B):
            for t in range(T):
                a = layernorm(x[b, t], W[p + "attn_norm.weight"])
                q[b, :, t] = linear(a, W[p + "attn.to_q.weight"]).reshape(heads, Dh)
                k[b, :, t] = linear(a, W[p + "attn.to_k.weight"]).reshape(heads, Dh)
                v[b, :, t] = linear(a, W[p + "attn.to_v.weight"]).reshape(heads, Dh)
        o, lse = attention(q, k, v, hidden_keys)
        lses.append(lse)
        for b in range(B):
            for t in range(T):
                x[b, t] = x[b, t] + linear(o[b, :, t].reshape(inner), W[p + "attn.to_out.weight"])
                f = layernorm(x[b, t], W[p + "ff_norm.weight"])
                f = gelu(linear(f, W[p + "ff.fc1.weight"], W[p + "ff.fc1.bias"]))
                x[b, t] = x[b, t] + linear(f, W[p + "ff.fc2.weight"], W[p + "ff.fc2.bias"])
    hidden = np.zeros((B, T, D))
    logits = np.zeros((B, T, W["head.weight"].shape[0]))
    for b in range(B):
        for t in range(T):
            hidden[b, t] = layernorm(x[b, t], W["norm.weight"])
            logits[b, t] = linear(hidden[b, t], W["head.weight"])
    return logits, lses, hidden


def next_embed_head(W: dict, hidden) -> np.ndarray:
    """pred = W2 silu(W1 h), no biases, at every position. (B,T,D) -> (B,T,D)"""
    hidden = np.asarray(hidden, np.float64)
    w1, w2 = np.asarray(W["next_embed.fc1.weight"], np.float64), np.asarray(W["next_embed.fc2.weight"], np.float64)
    pred = np.zeros_like(hidden)
    for b in range(hidden.shape[0]):
        for t in range(hidden.shape[1]):
            pred[b, t] = linear(silu(linear(hidden[b, t], w1)), w2)
    return pred


def autoregressive_loss(W: dict, tokens, heads: int, *, mask_positions=None, mask_mode: str = "replace",
                        zloss_weight: float = 0.0, next_embed_weight: float = 0.0, next_embed_kind: str = "mse",
                        target_table=None) -> dict[str, float]:
    """The complete loss as the README defines it ("The loss"), from weights and (B, T+1) tokens.

    `target_table` is the token-embedding table the next-embed *target* is read from; it
    defaults to W["tok_emb"]. Passing the unperturbed table while perturbing W models the
    detached target (finite differences then see no gradient through it)."""
    tokens = np.asarray(tokens)
    inp, tgt = tokens[:, :-1].copy(), tokens[:, 1:].copy()      # shift: predict t+1 from <= t
    hidden_keys = None
    if mask_positions is not None:
        if mask_mode == "replace":
            inp[np.asarray(mask_positions, bool)] = MASK           # targets stay as they are
        else:
            hidden_keys = np.asarray(mask_positions, bool)
    logits, lses, hidden = decoder_forward(W, inp, heads, hidden_keys)
    out = {"ce": cross_entropy(logits, tgt), "zloss": zloss(lses), "next_embed": 0.0}
    if "next_embed.fc1.weight" in W:
        table = np.asarray(W["tok_emb"] if target_table is None else target_table, np.float64)
        out["next_embed"] = next_embed(next_embed_head(W, hidden), table[tgt], tgt, next_embed_kind)
    out["total"] = out["ce"] + zloss_weight * out["zloss"] + next_embed_weight * out["next_embed"]
    return out
