"""Chapter 2a's exercises, solved."""
import jax
import jax.numpy as jnp


def huber_where(x, delta):
    abs_x = jnp.abs(x)
    return jnp.where(abs_x <= delta, 0.5 * x**2, delta * (abs_x - 0.5 * delta))


def ema_scan(values_T, decay):
    def step(previous, value):
        average = decay * previous + (1 - decay) * value
        return average, average

    _, averages_T = jax.lax.scan(step, values_T[0], values_T)
    return averages_T
