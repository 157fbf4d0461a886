"""Chapter 7's exercise, solved."""
import jax


def run_steps(step, state, batches):
    return jax.lax.scan(step, state, batches)
