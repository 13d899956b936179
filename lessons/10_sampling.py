"""Lesson 10: sampling, temperature and filters, and the KV cache.

To write, the model runs on the context and we keep the logits at its last position, bytes
only (never MASK or PAD). Filters may drop unlikely bytes first (top-k: keep the k best;
top-p: the fewest whose probabilities reach p; min-p: those at least min_p times as likely as
the best), then logits / temperature -> softmax -> draw one byte, append it, repeat.
Temperature 0 means greedy: always the argmax. The KV cache keeps every earlier key and value
(a new byte changes none, lesson 2), so each byte runs only its own position (timed by
python cli.py sample RUN --compare-cache). The slide: the model knows positions 0..T-1 only,
so a full context drops its oldest `slide` bytes (T/2 by default) and re-runs the rest from
position 0, since every cached key moved; slide 1 is the classic window, re-run every byte.

Look at: the entropy of the next byte rising with temperature toward ln 256; how many bytes
each filter keeps; text sampled by hand (plain forward, dropping half the context when
full) equal to the sampler's; the same text with and without the cache.
Run: python lessons/10_sampling.py
"""
from _common import B, T, check, course_trainer

import math

import numpy as np
from tinygrad import Tensor, TinyJit

from tinyar.data import PAD, encode
from tinyar.sample import Sampler, min_p_filter, next_token, softmax, top_k_filter, top_p_filter

model = course_trainer().model
forward = TinyJit(lambda x: model(x)[0].realize())               # (B,T) -> (B,T,V), compiled once


def next_logits(context: list[int]) -> np.ndarray:
    """Plain forward on <= T bytes, right-padded (causal: padding changes nothing before it). -> (256,)"""
    padded = np.full((B, T), PAD, dtype=np.int32)
    padded[0, :len(context)] = context
    return forward(Tensor(padded)).numpy()[0, len(context) - 1, :256].astype(np.float64)


logits = next_logits(list(encode("def ")))                       # (256,) the next byte's logits
entropy, temps = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum()), (0.5, 1.0, 2.0, 100.0)
H = [entropy(softmax(logits / t)) for t in temps]
print("next-byte entropy by temperature:", {t: round(h, 3) for t, h in zip(temps, H)}, f"ln 256 = {math.log(256):.3f}")
check("entropy_rises_with_temperature", float(H[0] < H[1] < H[2] < H[3]), 1)
check("entropy_at_temperature_100", H[3], math.log(256), 0.05)   # nearly uniform over the bytes
print("most likely next bytes:", [(chr(b), round(float(softmax(logits)[b]), 3)) for b in np.argsort(-logits)[:5]])

kept, p = lambda f: np.isfinite(f).sum(), softmax(logits)
print(f"bytes kept: top-k 5: {kept(top_k_filter(logits, 5))}, top-p 0.9: {kept(top_p_filter(logits, 0.9))}, "
      f"min-p 0.1: {kept(min_p_filter(logits, 0.1))}")
check("top_k_5_keeps", kept(top_k_filter(logits, 5)), 5)
nucleus = p[np.isfinite(top_p_filter(logits, 0.9))]
check("top_p_mass_kept", nucleus.sum(), 0.9, op=">")                      # at least p ...
check("top_p_mass_without_its_least_likely", nucleus.sum() - nucleus.min(), 0.9, op="<")  # ... and no more than needed
check("min_p_least_kept_over_best", p[np.isfinite(min_p_filter(logits, 0.1))].min() / p.max(), 0.1, op=">")
check("greedy_is_argmax", next_token(logits, np.random.default_rng(0), temperature=0), int(np.argmax(logits)))


for slide in (T // 2, 1):    # contexts once full: 5,6,7,8,5,6,... bytes vs always the last 8
    text = Sampler(model, slide=slide).generate("def ", 40, seed=1)              # temperature 1
    context, out, rng = list(encode("def ")), [], np.random.default_rng(1)       # by hand, same draws
    for _ in range(40):
        out.append(next_token(next_logits(context), rng))
        context = context[slide:] + out[-1:] if len(context) == T else context + out[-1:]
    print(f"slide {slide}: {text!r}")
    check(f"slide_{slide}_sampler_equals_by_hand", text == bytes(out).decode("utf-8", errors="replace"), 1)

settings = dict(temperature=0.8, top_k=40, seed=0)
cached, uncached = (Sampler(model, cache=c).generate("def ", 200, **settings) for c in (True, False))
print(f"sample (temperature 0.8, top-k 40; 15k parameters that saw 4,800 bytes: spacing and common\n"
      f"letters, no words yet. For real text train longer: python cli.py train):\n{cached}\n")
check("same_text_with_and_without_cache", cached == uncached, 1)
check("same_seed_same_text", Sampler(model).generate("def ", 200, **settings) == cached, 1)
printable = np.mean([32 <= b < 127 or b == 10 for b in cached.encode()])
check("printable_ascii_fraction", printable, 0.9, op=">")         # uniform bytes would give 0.37

# Exercises (answers in lessons/README.md)
# 1. Logits [2, 1, 0] over three tokens: how many does top-p 0.7 keep? And min-p 0.3?
# 2. With slide 4 and T = 8, how many bytes of context does the model see right after a slide?
