"""Chapter 7's exercise: many steps in one call with jax.lax.scan."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import Wrong


def _toy_step(w, batch):  # one step of gradient descent on a least-squares fit
    x_BD, y_B = batch
    loss, grad = jax.value_and_grad(lambda w: jnp.mean((x_BD @ w - y_B) ** 2))(w)
    return w - 0.1 * grad, loss


def run_steps(fn) -> str:
    rng = np.random.default_rng(2)
    xs_KBD = jnp.asarray(rng.normal(size=(6, 8, 3)).astype(np.float32))
    ys_KB = jnp.asarray(rng.normal(size=(6, 8)).astype(np.float32))
    w0 = jnp.zeros(3, jnp.float32)
    w, losses = w0, []
    for k in range(6):
        w, loss = _toy_step(w, (xs_KBD[k], ys_KB[k]))
        losses.append(loss)
    got_w, got_losses = jax.jit(fn, static_argnums=0)(_toy_step, w0, (xs_KBD, ys_KB))
    if np.shape(got_losses) != (6,):
        raise Wrong(f"The losses have shape {np.shape(got_losses)}: return one per step, stacked, shape (6,).")
    if not (np.allclose(got_w, w, rtol=1e-5, atol=1e-6) and np.allclose(got_losses, losses, rtol=1e-5)):
        raise Wrong("The final weights or the losses differ from a Python loop over the six steps: carry the "
                    "state from each step into the next.")
    primitives = str(jax.make_jaxpr(fn, static_argnums=0)(_toy_step, w0, (xs_KBD, ys_KB)))
    if "scan" not in primitives:
        raise Wrong("Right numbers, but the program has no scan: a Python loop under jit unrolls one copy of "
                    "the step per batch. Use jax.lax.scan(step, state, batches).")
    return "six steps in one scan, the same weights and losses as a Python loop."


CHECKS = {"run_steps": run_steps}
