"""Chapter 2a's exercises: control flow on traced values (jnp.where) and a loop as one lax.scan."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import Wrong


def _run_traced(fn, *args):
    """fn under jax.jit with every argument traced; a Python `if` on a value becomes a Wrong."""
    try:
        return np.asarray(jax.jit(fn)(*args))
    except jax.errors.ConcretizationTypeError as err:
        raise Wrong("Under jax.jit your function needed a traced value as a Python bool or number "
                    f"({type(err).__name__}): replace the Python `if` (or float(), int()) on an array "
                    "by jnp.where or lax.cond.") from None


def huber_where(fn) -> str:
    x = np.linspace(-3.0, 3.0, 25).astype(np.float32)
    delta = np.float32(1.25)
    small = np.abs(x) <= delta
    want = np.where(small, 0.5 * x**2, delta * (np.abs(x) - 0.5 * delta))
    got = _run_traced(fn, x, delta)
    if got.shape != x.shape:
        raise Wrong(f"The output has shape {got.shape}, the input {x.shape}: compute the loss of each "
                    "entry, do not sum them.")
    if np.allclose(got[small], want[small], atol=1e-6) and np.allclose(got[~small], 0.5 * x[~small] ** 2):
        raise Wrong("Every entry is 0.5 * x**2: for |x| > delta the loss is delta * (|x| - 0.5 * delta).")
    if not np.allclose(got, want, rtol=1e-6, atol=1e-6):
        worst = int(np.argmax(np.abs(got - want)))
        raise Wrong(f"At x = {x[worst]:.3f} (delta {delta}) the loss is {got[worst]:.6f}, NumPy's "
                    f"{want[worst]:.6f}: 0.5 * x**2 where |x| <= delta, delta * (|x| - 0.5 * delta) elsewhere.")
    grad = np.asarray(jax.jit(jax.grad(lambda v, d: fn(v, d).sum()))(x, delta))
    if not np.allclose(grad, np.clip(x, -delta, delta), atol=1e-6):
        raise Wrong("The values are right but the gradient is not x clipped to [-delta, delta]: "
                    "is a branch's value produced by a function jax cannot differentiate?")
    return f"{x.size} entries under jit match NumPy, and the gradient is clip(x, -delta, delta)."


def _ema_loop(values, decay):
    out = np.empty_like(values, dtype=np.float64)
    out[0] = values[0]
    for t in range(1, len(values)):
        out[t] = decay * out[t - 1] + (1 - decay) * values[t]
    return out


def ema_scan(fn) -> str:
    values = np.random.default_rng(0).normal(2.0, 1.0, 40).astype(np.float32)
    decay = np.float32(0.9)
    want = _ema_loop(values, decay)
    got = _run_traced(fn, values, decay)
    if got.shape != values.shape:
        raise Wrong(f"The output has shape {got.shape}, the input {values.shape}: return every step's "
                    "average (the scan's stacked outputs), not only the last carry.")
    from_zero = _ema_loop(np.concatenate([[0.0], values]), decay)[1:]
    if np.allclose(got, from_zero, atol=1e-5):
        raise Wrong("Your average starts from 0, so y[0] is (1 - decay) * values[0]: start the carry at "
                    "values[0] (then step 0 gives values[0] back).")
    if not np.allclose(got, want, rtol=1e-5, atol=1e-5):
        worst = int(np.argmax(np.abs(got - want)))
        raise Wrong(f"At t = {worst} the average is {got[worst]:.6f}, a Python loop gives {want[worst]:.6f}: "
                    "y[t] = decay * y[t-1] + (1 - decay) * values[t], with y[0] = values[0].")
    sizes = [len(jax.make_jaxpr(fn)(jnp.ones(n, jnp.float32), decay).eqns) for n in (8, 64)]
    if sizes[1] > sizes[0]:
        raise Wrong(f"The program has {sizes[0]} operations for 8 values and {sizes[1]} for 64: a Python loop "
                    "was unrolled while tracing. Let one lax.scan do the loop.")
    return f"{values.size} steps under jit match a Python loop; the jaxpr has {sizes[1]} equations for 8 or 64 values."


CHECKS = {"huber_where": huber_where, "ema_scan": ema_scan}
