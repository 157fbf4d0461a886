"""The NNX model (guppy_jax/core/nnx_model.py) against the Linen model and the PyTorch reference:
float32, dropout off, the rows of parity_tests/nnx_measure.py."""
import pytest

from parity_tests import nnx_measure
from parity_tests.conftest import CONFIGS, assert_all


def test_conversion_is_exact_and_the_state_lines_up_with_linens_params(cfg):
    assert_all(nnx_measure.check_nnx_conversion(cfg))


@pytest.mark.parametrize("source", ["torch", "flax", "nnx"])
def test_forward_and_loss_match(cfg, source):
    checks = nnx_measure.check_nnx_forward(cfg, source)
    # three intermediates per layer and the logits, against Linen and torch, then the loss twice
    assert len(checks) == 2 * (3 * cfg.n_layers + 1) + 2
    assert_all(checks)


@pytest.mark.parametrize("fence", [True, False], ids=["linen-fence-on", "linen-fence-off"])
@pytest.mark.parametrize("source", ["torch", "nnx"])
def test_every_gradient_matches_linen(cfg, source, fence):
    """Within float32 rounding with Linen's gradient fence (its default on the CPU), exactly
    without it."""
    checks = nnx_measure.check_nnx_grads(cfg, source, fence)
    if not checks:
        pytest.skip("this guppy_jax/core/model.py has no GRADIENT_FENCE setting")
    assert len(checks) == 4 + 12 * cfg.n_layers  # every parameter
    assert_all(checks)


@pytest.mark.parametrize("fence", [True, False], ids=["linen-fence-on", "linen-fence-off"])
def test_fifty_updates_match_linen(cfg, fence):
    """The NNX optimizer against steps.make_train_step on the same batches; with the fence on
    also the split/merge + jax.jit step (bit for bit), and on the micro model the reference
    (at 9M its 50 steps take two minutes; the report runs them)."""
    if cfg is not CONFIGS["micro"]:
        pytest.skip("at 9M, 50 steps in three ways take minutes: python -m parity_tests.report runs them")
    checks, losses = nnx_measure.check_nnx_training(cfg, fence=fence, against_torch=cfg is CONFIGS["micro"])
    if not checks:
        pytest.skip("this guppy_jax/core/model.py has no GRADIENT_FENCE setting")
    assert len(losses["nnx"]) == 50
    assert losses["nnx"][-1] < losses["nnx"][0]  # it trained
    assert_all(checks)


def test_generation_matches_linen_and_torch(cfg):
    if cfg is not CONFIGS["micro"]:
        pytest.skip("at 9M, 32 greedy tokens in three frameworks take a minute: python -m parity_tests.report runs it")
    checks = nnx_measure.check_nnx_generation(cfg)
    assert len(checks) == 3
    assert_all(checks)


def test_the_parity_report_prints_the_nnx_rows_folded_per_layer(capsys):
    from guppy_jax.core.config import PARITY_MODELS
    from parity_tests.report import print_table
    cfg = PARITY_MODELS["micro"]
    checks = nnx_measure.check_nnx_conversion(cfg) + nnx_measure.check_nnx_forward(cfg, "torch")
    assert print_table(checks, "micro") == 0
    out = capsys.readouterr().out
    assert "nnx vs linen" in out and "blocks.*." in out and "blocks.0." not in out
    assert out.rstrip().endswith(f"{len(checks)} quantities compared (micro), 0 out of tolerance")
