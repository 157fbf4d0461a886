import pytest

from guppy_jax.config import PRESET_MODELS

CONFIGS = {"tiny": PRESET_MODELS["tiny"], "9m": PRESET_MODELS["guppy-9m"]}


def assert_all(checks):
    """Fail naming every quantity out of tolerance and its measured difference."""
    assert checks, "no quantity was compared"
    bad = [str(c) for c in checks if not c.ok]
    assert not bad, "out of tolerance:\n  " + "\n  ".join(bad)


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def cfg(request):
    return CONFIGS[request.param]
