"""Importing the parity harness changes nothing for the unit tests beside it."""
import importlib

import jax
import pytest


def test_importing_the_parity_harness_keeps_default_precision():
    pytest.importorskip("torch")
    measure = importlib.import_module("parity_tests.measure")
    assert jax.config.jax_default_matmul_precision is None
    with measure.parity_precision():
        assert jax.config.jax_default_matmul_precision == "highest"
    assert jax.config.jax_default_matmul_precision is None
