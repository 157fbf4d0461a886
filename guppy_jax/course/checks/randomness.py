"""Chapter 3's exercise: dropout whose mask depends only on (key, step)."""
from __future__ import annotations

import jax
import numpy as np

from .. import Wrong


def step_dropout(fn) -> str:
    x_BD = jax.numpy.asarray(np.random.default_rng(0).normal(size=(4, 32)).astype(np.float32))
    key, rate = jax.random.key(3), 0.25
    keep_BD = jax.random.bernoulli(jax.random.fold_in(key, 5), 1.0 - rate, x_BD.shape)
    want = np.where(keep_BD, x_BD / (1.0 - rate), 0.0)
    got, again, later = (np.asarray(fn(x_BD, rate, key, step)) for step in (5, 5, 6))
    if got.shape != x_BD.shape:
        raise Wrong(f"The output has shape {got.shape}, the input {x_BD.shape}: drop entries, keep the shape.")
    if not np.array_equal(got, again):
        raise Wrong("The same (key, step) gave two different masks: derive every random number from "
                    "jax.random.fold_in(key, step), nothing else.")
    if np.array_equal(got, later):
        raise Wrong("Steps 5 and 6 gave the same mask: fold the step into the key.")
    if np.allclose(got, np.where(keep_BD, x_BD, 0.0)):
        raise Wrong("The mask is right but the kept entries are not scaled: divide them by (1 - rate), "
                    "so that the expected value stays x.")
    if not np.allclose(got, want, rtol=1e-6, atol=0):
        raise Wrong("Not the mask of jax.random.bernoulli(jax.random.fold_in(key, step), 1 - rate, x.shape) "
                    "(True keeps an entry).")
    dropped = float(np.mean(got == 0))
    return f"{dropped:.0%} of the entries dropped at rate {rate}, the same mask for the same step."


CHECKS = {"step_dropout": step_dropout}
