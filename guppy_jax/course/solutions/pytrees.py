"""Chapter 5a's exercises, solved."""
import jax


def unflatten_vector(vector, like):
    leaves, treedef = jax.tree.flatten(like)
    pieces, start = [], 0
    for leaf in leaves:  # jax.tree.leaves order: dict keys sorted
        pieces.append(vector[start:start + leaf.size].reshape(leaf.shape))
        start += leaf.size
    return jax.tree.unflatten(treedef, pieces)


def ema_update(ema, params, decay):
    return jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
