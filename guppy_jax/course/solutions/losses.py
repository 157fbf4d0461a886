"""Chapter 4's exercise, solved."""
import jax
import jax.numpy as jnp


def masked_cross_entropy(logits_BTV, targets_BT, mask_BT):
    logp_BTV = jax.nn.log_softmax(logits_BTV, axis=-1)
    ce_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    kept_BT = mask_BT.astype(ce_BT.dtype)
    return (ce_BT * kept_BT).sum() / jnp.maximum(kept_BT.sum(), 1.0)
