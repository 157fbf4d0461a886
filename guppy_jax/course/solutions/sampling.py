"""Chapter 8's exercise, solved."""
import jax
import jax.numpy as jnp


def top_p_keep(logits_V, top_p):
    order_V = jnp.argsort(-logits_V)
    probs_V = jax.nn.softmax(logits_V[order_V])
    before_V = jnp.cumsum(probs_V) - probs_V  # the mass of the tokens ranked above each one
    keep_sorted_V = (before_V < top_p).at[0].set(True)  # the most likely token always stays
    return jnp.zeros_like(keep_sorted_V).at[order_V].set(keep_sorted_V)
