"""Attention probabilities, attention outputs, block outputs and logits, float32, dropout off."""
import pytest

from parity_tests.conftest import assert_all
from parity_tests.measure import check_forward


@pytest.mark.parametrize("source", ["torch", "flax"])
def test_forward_matches(cfg, source):
    checks = check_forward(cfg, source)
    # every layer's three intermediates plus the logits were compared
    assert len(checks) == 3 * cfg.n_layers + 1
    assert_all(checks)
