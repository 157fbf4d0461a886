"""Chapter 7a's exercise: a log-softmax that stays finite on large logits, checked against
jax.nn.log_softmax under jax_debug_nans."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def _logits():
    """Rows of very different scales: ordinary, near +1000, near -1000, and spread over +-300."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(4, 9)).astype(np.float32)
    rows[1] += 1000.0
    rows[2] -= 1000.0
    rows[3] *= 150.0
    return rows


def stable_log_softmax(fn) -> str:
    import jax
    import jax.numpy as jnp

    logits_BV = _logits()
    logits_BTV = np.stack([logits_BV, logits_BV[::-1]], axis=1)  # (4, 2, 9): any leading shape
    want_BTV = np.asarray(jax.nn.log_softmax(logits_BTV, axis=-1), np.float64)
    with jax.debug_nans(True):
        try:
            got_BTV = np.asarray(jax.jit(fn)(logits_BTV), np.float64)
        except FloatingPointError as err:
            raise Wrong(f"A NaN appears ({str(err).splitlines()[0]}): exp overflows to inf above about 88, "
                        "and inf / inf or inf - inf is NaN. Subtract each row's max before exp.") from err
    if got_BTV.shape != want_BTV.shape:
        raise Wrong(f"The result has shape {got_BTV.shape}, not the logits' {want_BTV.shape}: keep the last "
                    "axis (keepdims=True in the max and the sum).")
    if not np.all(np.isfinite(got_BTV)):
        rows = sorted({int(b) for b in np.argwhere(~np.isfinite(got_BTV))[:, 0]})
        raise Wrong(f"Rows {rows} have inf entries (of the test rows, 1 sits near +1000 and 2 near -1000): exp "
                    "overflowed to inf or underflowed to 0. Subtract each row's own max (axis=-1, keepdims=True) "
                    "before exp.")
    worst = float(np.max(np.abs(got_BTV - want_BTV)))
    if worst > 1e-4:
        raise Wrong(f"An entry is off by {worst:.3g} from jax.nn.log_softmax: the log of the sum of exp is taken "
                    "over the last axis only, one value per row.")
    with jax.debug_nans(True):
        try:
            grad_BTV = np.asarray(jax.grad(lambda x: fn(x)[..., 0].sum())(logits_BTV))
        except FloatingPointError as err:
            raise Wrong(f"The gradient makes a NaN ({str(err).splitlines()[0]}): keep every intermediate finite, "
                        "e.g. no log of 0.") from err
    want_grad = np.asarray(jax.grad(lambda x: jax.nn.log_softmax(x, axis=-1)[..., 0].sum())(logits_BTV))
    if float(np.max(np.abs(grad_BTV - want_grad))) > 1e-4:
        raise Wrong("The values are right but the gradient is not: a shift that does not depend on the row "
                    "changes nothing, so its gradient must cancel.")
    return f"within {worst:.1e} of jax.nn.log_softmax on rows up to +-1000, and no NaN in it or its gradient."


CHECKS = {"stable_log_softmax": stable_log_softmax}
