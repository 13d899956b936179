"""The context a model generates from, run with a fixed-shape KV cache (or without one).

The model learned *absolute* position embeddings over windows of T = seq_len tokens, so the
context must start at position 0. When it is full it has to move, and then every cached key
and value is stale (each was computed with its old position's embedding). So when the
context is full we drop its oldest `slide` tokens and run the rest once more from position 0
(a "prefill"); after that each new token costs one position until it is full again.
slide=1 is the classic sliding window (nanoGPT): once full, every token re-runs the whole
window. The default slide=T//2 re-runs it once every T/2 tokens. Without the cache the same
contexts are re-run in full for every token, so both give the same logits (tests check 1e-5).

Nothing recompiles per token: each layer caches keys and values in fixed (1,H,T,Dh) buffers;
a step writes slot `pos` and attends to slots <= pos through a mask, not a slice, and the
token and `pos` are bound Variables. Three jitted functions, each compiled once: prefill (1,T), step (1,1),
and the model's own forward (1,T) for the uncached path.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor, TinyJit, Variable

from tinyar.data import PAD
from tinyar.model import Decoder


class LayerCache:
    """One layer's keys and values in fixed (1,H,T,Dh) buffers, as model.Attention reads them.
    visible (S,T) bool: which slots each of the S queries may see; here (1,1,T,1) bool or None:
    the slot this step's key and value go into (None: they replace the whole cache)."""

    def __init__(self, keys: Tensor, values: Tensor, visible: Tensor, here: Tensor | None):
        self.keys, self.values, self.visible, self.here = keys, values, visible, here

    def merge(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """This step's k, v (1,H,S,Dh) written into the cache -> every slot's k, v (1,H,T,Dh)"""
        if self.here is not None:   # the new key/value go into one slot, the others stay
            k, v = self.here.where(k, self.keys), self.here.where(v, self.values)
        self.keys.assign(k)
        self.values.assign(v)
        return k, v


class Window:
    """The last <= T tokens, at positions 0..n-1. start() and append() return the logits (V,)
    for the token that comes next; cache=False re-runs the whole window every time."""

    def __init__(self, model: Decoder, cache: bool = True, slide: int | None = None):
        cfg = model.cfg
        self.model, self.cache, self.T = model, cache, cfg.seq_len
        self.slide = max(1, self.T // 2) if slide is None else slide   # 0 is refused, not the default
        if not 1 <= self.slide < self.T:
            raise ValueError(f"--slide must be between 1 and seq_len-1 = {self.T - 1} (got {slide})")
        dev = model.tok_emb.device
        shape, dt = (1, cfg.heads, self.T, cfg.head_dim), model.dtype  # (1,H,T,Dh) in the matmul dtype
        self.keys = [Tensor.zeros(*shape, device=dev, dtype=dt).contiguous().realize() for _ in model.blocks]
        self.values = [Tensor.zeros(*shape, device=dev, dtype=dt).contiguous().realize() for _ in model.blocks]
        self.slots = Tensor(np.arange(self.T, dtype=np.int32), device=dev).realize()  # (T,)
        self.token_var, self.pos_var = Variable("token", 0, cfg.vocab - 1), Variable("pos", 0, self.T - 1)
        self._prefill = TinyJit(self._prefill_fn)
        self._step = TinyJit(self._step_fn)
        self._full = TinyJit(lambda ids: model(ids)[0][0].realize())  # uncached (1,T) -> (T,V)
        self.tokens: list[int] = []

    def _prefill_fn(self, ids: Tensor) -> Tensor:
        """ids (1,T) at positions 0..T-1 -> logits (T,V), rewriting every slot of the cache."""
        m = self.model
        return self._forward(m.embed(ids) + m.pos_emb, self.slots, write_at=None)

    def _step_fn(self, token: Variable, pos: Variable) -> Tensor:
        """One token at position pos -> logits (1,V), writing slot pos of the cache. Both come in
        as bound Variables, so no input tensor is built and copied for every token."""
        m, dev = self.model, self.slots.device
        p = Tensor(pos, device=dev).reshape(1)                         # (1,)
        x = m.embed(Tensor(token, device=dev).reshape(1, 1)) + m.pos_emb[p]  # (1,1,D)
        return self._forward(x, p, write_at=p)

    def _forward(self, x: Tensor, q_pos: Tensor, write_at: Tensor | None) -> Tensor:
        """x (1,S,D) embedded tokens at positions q_pos (S,) -> logits (S,V). Their keys and values
        go into slot write_at (S=1), or fill the whole cache (S=T, write_at None). The blocks are
        the model's own (Attention takes the cache), so sampling runs the trained code."""
        m, S, T = self.model, x.shape[1], self.T
        visible = self.slots.reshape(1, T) <= q_pos.reshape(S, 1)      # (S,T) causal, by position
        here = None if write_at is None else (self.slots == write_at).reshape(1, 1, T, 1)
        caches = [LayerCache(k, v, visible, here) for k, v in zip(self.keys, self.values)]
        hidden, _ = m.run_blocks(x, caches=caches)
        logits = m.logits(hidden)[0]                                   # (S,V)
        Tensor.realize(logits, *self.keys, *self.values)
        return logits

    def _run_all(self) -> np.ndarray:
        """Run the whole window from position 0, right-padded to T (causal attention keeps the
        padding from reaching earlier positions). -> logits for the next token (V,)"""
        n, dev = len(self.tokens), self.slots.device
        padded = np.full((1, self.T), PAD, dtype=np.int32)
        padded[0, :n] = self.tokens
        ids = Tensor(padded, device=dev)
        logits = self._prefill(ids) if self.cache else self._full(ids)
        return logits.numpy()[n - 1]

    def start(self, ids) -> np.ndarray:
        """Begin with the last T of `ids` (at least one). -> logits for the next token (V,)"""
        self.tokens = [int(i) for i in ids][-self.T:]
        if not self.tokens:
            raise ValueError("the prompt is empty; give at least one character")
        return self._run_all()

    def append(self, token: int) -> np.ndarray:
        """Add one token. -> logits for the token after it (V,)"""
        if len(self.tokens) == self.T:  # full: move the window, which makes every cached key stale
            self.tokens = self.tokens[self.slide:] + [token]
            return self._run_all()
        self.tokens.append(token)
        if not self.cache:
            return self._run_all()
        pos = len(self.tokens) - 1
        return self._step(self.token_var.bind(token), self.pos_var.bind(pos)).numpy()[0]
