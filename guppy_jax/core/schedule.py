"""The learning-rate schedule, written once for both frameworks.

Linear warmup from 0 to `peak` over `warmup` steps, then a cosine from `peak` down to
`floor` at step `total` (held there after). `xp` is numpy (PyTorch's LambdaLR, plain
Python) or jax.numpy (optax, inside jit). Step s is the lr of the (s+1)-th update.

It computes in the widest float `xp` offers: float64 in numpy, and in JAX when x64 is on
(float32 otherwise). In float32, numpy's and XLA's cos may differ by one ulp, which moves
the lr by ~1e-8 relative: invisible in float32 training, but enough to make float64
parity runs drift after the warmup.
"""
from __future__ import annotations

import math

import numpy as np


def warmup_cosine(step, *, peak: float, floor: float, warmup: int, total: int, xp=np):
    step = xp.asarray(step, dtype=xp.result_type(float))
    warm = peak * step / max(warmup, 1)
    progress = xp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    decayed = floor + 0.5 * (peak - floor) * (1.0 + xp.cos(math.pi * progress))
    return xp.where(step < warmup, warm, decayed)
