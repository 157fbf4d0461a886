"""guppy-jax: GuppyLM, a tiny fish-talking transformer, in JAX/Flax beside a PyTorch reference."""

__version__ = "0.1.0"
