"""Chapter 8's exercise: the top-p cut, against the project's sampler."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .. import Wrong
from ...core.generate import _floor_from_sorted


def top_p_keep(fn) -> str:
    rng = np.random.default_rng(4)
    for top_p in (0.1, 0.5, 0.9, 1.0):
        logits_V = rng.normal(size=(40,)).astype(np.float32) * 2
        floor = float(_floor_from_sorted(jnp.asarray(logits_V)[None], 0, top_p)[0, 0])
        want_V = logits_V >= floor
        got_V = np.asarray(fn(jnp.asarray(logits_V), top_p))
        if got_V.shape != want_V.shape or got_V.dtype != bool:
            raise Wrong(f"Return a boolean mask of shape {want_V.shape}, True for the tokens kept "
                        f"(got {got_V.dtype} {got_V.shape}).")
        if not np.array_equal(got_V, want_V):
            kept, should = int(got_V.sum()), int(want_V.sum())
            hint = (" Keep a token while the probability of the tokens before it (in sorted order) is still "
                    "under top_p: the token that crosses top_p is kept too." if abs(kept - should) == 1 else "")
            raise Wrong(f"At top_p={top_p} you keep {kept} tokens, the sampler keeps {should}.{hint}")
    return "the same tokens as the project's sampler at top_p 0.1, 0.5, 0.9 and 1.0."


CHECKS = {"top_p_keep": top_p_keep}
