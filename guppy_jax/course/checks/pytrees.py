"""Chapter 5a's exercises: a flat vector back into a pytree, and an EMA over pytrees, checked
against jax.flatten_util and PyTorch."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def _tree(seed: int):
    """A small nested pytree of float32 arrays: a dict holding a list holding a tuple."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {"dense": {"kernel": normal(3, 4), "bias": normal(4)},
            "blocks": [normal(5), (normal(2, 2), normal())]}


def _like():
    """A tree whose dict is written in unsorted key order: jax.tree.leaves sorts the keys."""
    return {"dense": {"kernel": np.zeros((3, 4), np.float32), "bias": np.zeros(4, np.float32)},
            "blocks": [np.zeros(5, np.float32), (np.zeros((2, 2), np.float32), np.zeros((), np.float32))]}


def unflatten_vector(fn) -> str:
    import jax
    import torch
    from jax.flatten_util import ravel_pytree

    like = _like()
    vector = np.arange(sum(leaf.size for leaf in jax.tree.leaves(like)), dtype=np.float32)
    got = fn(vector, like)
    if jax.tree.structure(got) != jax.tree.structure(like):
        raise Wrong(f"The result's structure is {jax.tree.structure(got)}, not {jax.tree.structure(like)}: "
                    "cut the vector into one piece per leaf, then jax.tree.unflatten(treedef, pieces).")
    want = ravel_pytree(like)[1](vector)
    holders = [torch.nn.Parameter(torch.zeros(leaf.shape)) for leaf in jax.tree.leaves(like)]
    torch.nn.utils.vector_to_parameters(torch.from_numpy(vector), holders)  # fills them in order
    for (path, g), w, h in zip(jax.tree.leaves_with_path(got), jax.tree.leaves(want), holders):
        name = jax.tree_util.keystr(path)
        if np.shape(g) != np.shape(w):
            raise Wrong(f"Leaf {name} has shape {np.shape(g)}, not {np.shape(w)}: reshape each piece to its "
                        "leaf's shape.")
        if not np.array_equal(np.asarray(g), np.asarray(w)):
            raise Wrong(f"Leaf {name} holds entries {np.ravel(g)[:3]}..., not {np.ravel(w)[:3]}...: take the "
                        "pieces in jax.tree.leaves order (dict keys sorted), each as long as its leaf's size.")
        if not np.array_equal(np.asarray(g), h.detach().numpy()):
            raise Wrong(f"Leaf {name} differs from torch.nn.utils.vector_to_parameters.")
    try:
        jitted = jax.jit(fn)(vector, like)
    except Exception as err:  # noqa: BLE001: the reader's code, under jit
        raise Wrong(f"It fails under jax.jit ({type(err).__name__}): the sizes and shapes of `like`'s leaves "
                    "are known while tracing, so plain slices and reshapes work.") from err
    if not all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
               zip(jax.tree.leaves(jitted), jax.tree.leaves(want))):
        raise Wrong("Under jax.jit the result differs.")
    return (f"{len(holders)} leaves as jax.flatten_util.ravel_pytree and torch.nn.utils.vector_to_parameters "
            "cut them, and the same under jit.")


def ema_update(fn) -> str:
    import jax
    import torch

    ema, params, decay = _tree(1), _tree(2), 0.9
    got = fn(ema, params, decay)
    if jax.tree.structure(got) != jax.tree.structure(ema):
        raise Wrong(f"The result's structure is {jax.tree.structure(got)}, not the params' "
                    f"{jax.tree.structure(ema)}: jax.tree.map over the two trees keeps it.")
    averaged = [torch.from_numpy(np.array(leaf)) for leaf in jax.tree.leaves(ema)]
    for e, p in zip(averaged, jax.tree.leaves(params)):
        e.lerp_(torch.from_numpy(np.asarray(p)), 1 - decay)  # e + (1 - decay) * (p - e), in place
    worst = max(float(np.max(np.abs(np.asarray(g, np.float64) - w.numpy())))
                for g, w in zip(jax.tree.leaves(got), averaged))
    if worst > 1e-6:
        swapped = jax.tree.map(lambda e, p: (1 - decay) * e + decay * p, ema, params)
        off = max(float(np.max(np.abs(np.asarray(g, np.float64) - s))) for g, s in
                  zip(jax.tree.leaves(got), jax.tree.leaves(swapped)))
        hint = (" It looks like the weights are swapped: the old average keeps `decay`, the new params get "
                "1 - decay." if off < 1e-6 else "")
        raise Wrong(f"A leaf is off by up to {worst:.3g} from PyTorch's lerp_ loop.{hint}")
    try:
        jitted = jax.jit(fn)(ema, params, 0.99)
    except Exception as err:  # noqa: BLE001: the reader's code, under jit
        raise Wrong(f"It fails under jax.jit with a traced decay ({type(err).__name__}): keep it to "
                    "jnp arithmetic.") from err
    want = jax.tree.map(lambda e, p: 0.99 * np.asarray(e) + 0.01 * np.asarray(p), ema, params)
    if max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in
           zip(jax.tree.leaves(jitted), jax.tree.leaves(want))) > 1e-6:
        raise Wrong("Under jax.jit with decay 0.99 the average is not 0.99 * ema + 0.01 * params.")
    return f"every leaf within {worst:.1e} of PyTorch's lerp_, same structure, and the same under jit."


CHECKS = {"unflatten_vector": unflatten_vector, "ema_update": ema_update}
