"""float16 training with loss scaling against the original's AMP loop (autocast + GradScaler)."""
from parity_tests.conftest import CONFIGS, assert_all
from parity_tests.measure import check_float16_training


def test_float16_skips_scales_and_trains_like_torch_amp():
    checks, got = check_float16_training(CONFIGS["micro"], n_steps=50, growth_interval=10, overflow_at=25)
    # the run really exercised the scaler: the forced overflow was skipped by both, the scale
    # grew after 10 finite steps and came back down after overflows
    assert got["torch_skip"][25] and got["jax_skip"][25]
    assert max(got["torch_scale"]) > 65536 and min(got["torch_scale"]) < max(got["torch_scale"])
    assert_all(checks)


def test_loss_scale_follows_grad_scaler_step_for_step():
    """The same pattern of finite and overflowing steps through torch's GradScaler and
    guppy_jax.core.steps.LossScale: the same scale after every step (flax's DynamicScale would
    grow one step later)."""
    import jax.numpy as jnp
    import torch

    from guppy_jax.core.steps import LossScale
    pattern = [True] * 7 + [False, True, True, True, False, False] + [True] * 5
    w = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    ours = LossScale.create(1024.0, growth_interval=3)
    for finite in pattern:
        opt.zero_grad()
        scaler.scale((w * (1.0 if finite else float("inf"))).sum()).backward()
        scaler.step(opt)
        scaler.update()
        ours = ours.after(jnp.asarray(finite))
        assert float(ours.scale) == scaler.get_scale()
    assert int(ours.skipped) == pattern.count(False)
