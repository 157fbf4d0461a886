"""The loss and the gradient of every parameter (the tied embedding counts both uses)."""
import pytest

from parity_tests.conftest import CONFIGS, assert_all
from parity_tests.measure import FLOAT32_9M_TOLERANCES, check_loss_and_grads

SOURCES = ["torch", "flax"]


@pytest.mark.parametrize("source", SOURCES)
def test_micro_float32(source):
    assert_all(check_loss_and_grads(CONFIGS["micro"], source))


@pytest.mark.parametrize("source", SOURCES)
def test_9m_float64_meets_targets(source):
    assert_all(check_loss_and_grads(CONFIGS["9m"], source, "float64"))


@pytest.mark.parametrize("source", SOURCES)
def test_9m_float32(source):
    """Loss within 1e-6; gradients within the ReLU-kink bound (see measure.py)."""
    assert_all(check_loss_and_grads(CONFIGS["9m"], source, grad_tol=FLOAT32_9M_TOLERANCES["grad"]))
