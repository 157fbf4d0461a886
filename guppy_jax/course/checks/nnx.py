"""Chapter 6a's exercise: a small NNX module, checked against the same formula in plain jnp."""
from __future__ import annotations

import numpy as np

from .. import Wrong

D, HIDDEN = 6, 10


def ResidualMLP(cls) -> str:  # noqa: N802: named as the exercise, which is a class
    import jax
    import jax.numpy as jnp
    from flax import nnx

    module = cls(D, HIDDEN, rngs=nnx.Rngs(0))
    if not isinstance(module, nnx.Module):
        raise Wrong(f"ResidualMLP(...) made a {type(module).__name__}, not an nnx.Module: "
                    "subclass nnx.Module.")
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    shapes = sorted(tuple(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params))
    want = sorted([(D, HIDDEN), (HIDDEN,), (HIDDEN, D), (D,)])
    if shapes != want:
        raise Wrong(f"The module's parameters have shapes {shapes}; two nnx.Linear layers with bias, "
                    f"up ({D} -> {HIDDEN}) and down ({HIDDEN} -> {D}), have {want}.")

    # random values in every parameter (a fresh Linear's biases are zeros, which would hide them)
    rs = np.random.RandomState(1)
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(rs.normal(size=np.shape(a)), jnp.float32), params)
    by_shape = {tuple(np.shape(leaf)): np.asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(params)}
    w_up, b_up, w_down, b_down = by_shape[(D, HIDDEN)], by_shape[(HIDDEN,)], by_shape[(HIDDEN, D)], by_shape[(D,)]

    x_BTD = rs.normal(size=(2, 3, D)).astype(np.float32)
    got = np.asarray(nnx.merge(graphdef, params, rest)(jnp.asarray(x_BTD)), np.float64)
    x = x_BTD.astype(np.float64)
    mlp = np.maximum(x @ w_up + b_up, 0.0) @ w_down + b_down
    if got.shape != x_BTD.shape:
        raise Wrong(f"The output has shape {got.shape}, not the input's {x_BTD.shape}.")
    err = float(np.abs(got - (x + mlp)).max())
    if err > 1e-4:
        if np.abs(got - mlp).max() < 1e-4:
            hint = " It is down(relu(up(x))) alone: add x back (the residual)."
        elif np.abs(got - (x + (x @ w_up + b_up) @ w_down + b_down)).max() < 1e-4:
            hint = " It matches the formula without the relu: apply jax.nn.relu between up and down."
        else:
            hint = " Compute x + self.down(jax.nn.relu(self.up(x)))."
        raise Wrong(f"The output is off by up to {err:.3g} from x + down(relu(up(x))).{hint}")

    jitted = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x))(params, jnp.asarray(x_BTD))
    err_jit = float(np.abs(np.asarray(jitted, np.float64) - (x + mlp)).max())
    if err_jit > 1e-4:
        raise Wrong(f"Under jax.jit (through nnx.split and nnx.merge) the output is off by {err_jit:.3g}: "
                    "keep the call a function of the parameters and the input only.")
    return (f"4 parameters of shapes {want}; output within {max(err, err_jit):.1e} of "
            "x + down(relu(up(x))), eagerly and under jax.jit.")


CHECKS = {"ResidualMLP": ResidualMLP}
