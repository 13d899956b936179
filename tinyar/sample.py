"""Sampling from a trained decoder.

The forward always runs on a fixed (1, T) window (right-padded; causal attention means the
padding can't affect earlier positions), so one compiled kernel set serves every token.
"""
from __future__ import annotations

import numpy as np
from tinygrad import Tensor, TinyJit

from tinyar.data import PAD, decode, encode
from tinyar.model import Decoder


class Sampler:
    def __init__(self, model: Decoder):
        self.model = model
        self.T = model.cfg.seq_len
        self._forward = TinyJit(lambda ids: model(ids)[0][0].realize())  # (T,V)

    def next_logits(self, ids: list[int]) -> np.ndarray:
        """Logits for the token after `ids` (its last T tokens). -> (V,) float32"""
        window = ids[-self.T:]
        padded = np.full((1, self.T), PAD, dtype=np.int32)
        padded[0, :len(window)] = window
        dev = self.model.tok_emb.device
        return self._forward(Tensor(padded, device=dev)).numpy()[len(window) - 1]

    def generate(self, prompt: str | bytes, max_new_tokens: int, temperature: float = 0.8, top_k: int = 0,
                 seed: int = 0) -> str:
        rng = np.random.default_rng(seed)
        ids = [int(i) for i in encode(prompt)] or [ord("\n")]
        start = len(ids)
        for _ in range(max_new_tokens):
            logits = self.next_logits(ids)[:256].astype(np.float64)  # never emit MASK/PAD
            if top_k:
                logits[logits < np.sort(logits)[-top_k]] = -np.inf
            if temperature <= 0:
                ids.append(int(np.argmax(logits)))
                continue
            p = np.exp((logits - logits.max()) / temperature)
            ids.append(int(rng.choice(len(p), p=p / p.sum())))
        return decode(ids[start:])
