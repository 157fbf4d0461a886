"""The parity harness itself: full-precision matmuls inside parity runs, defaults outside."""
import jax
import torch

from parity_tests.measure import parity_precision


def test_highest_precision_inside_and_the_users_setting_after():
    assert jax.config.jax_default_matmul_precision == "highest"  # set by the autouse fixture
    jax.config.update("jax_default_matmul_precision", None)
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with parity_precision():
            assert jax.config.jax_default_matmul_precision == "highest"
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert jax.config.jax_default_matmul_precision is None
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
        jax.config.update("jax_default_matmul_precision", "highest")
