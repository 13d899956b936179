"""Attack (or an accident): allocate far more memory than the machine has. The memory limit
turns it into a MemoryError that fails the task. Scores 0."""
import numpy as np


def shift(tokens):
    hog = np.ones(1 << 34)         # 128 GiB of float64
    return hog, hog


def total_loss(ce, zloss, next_embed, zloss_weight, next_embed_weight):
    return bytearray(1 << 36)      # 64 GiB of bytes
