import jax
import pytest

from guppy_jax.core.config import PARITY_MODELS
from parity_tests.measure import parity_precision

CONFIGS = {"micro": PARITY_MODELS["micro"], "9m": PARITY_MODELS["guppy-9m"]}


def assert_all(checks):
    """Fail naming every quantity out of tolerance and its measured difference."""
    assert checks, "no quantity was compared"
    bad = [str(c) for c in checks if not c.ok]
    assert not bad, "out of tolerance:\n  " + "\n  ".join(bad)


@pytest.fixture(autouse=True)
def full_float32_matmuls():
    """Every parity test runs at "highest" matmul precision, and only the parity tests."""
    with parity_precision():
        assert jax.config.jax_default_matmul_precision == "highest"
        yield


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def cfg(request):
    return CONFIGS[request.param]
