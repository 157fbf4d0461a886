"""Chapter 5's exercise, solved."""
import jax.numpy as jnp


def adam_step(param, grad, m, v, t, lr, b1, b2, eps):
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return param - lr * m_hat / (jnp.sqrt(v_hat) + eps), m, v
