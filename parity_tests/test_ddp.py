"""PyTorch DistributedDataParallel (2 gloo processes on CPU) against one device, and against
JAX: where the two frameworks average a loss across workers. JAX on a 2-device mesh against
one device is in tests/test_mesh.py (the loss there is computed on the global batch)."""
import numpy as np
import pytest
import torch

from guppy_jax.core.config import OptimConfig
from parity_tests.conftest import CONFIGS
from parity_tests.measure import jax_batch, pair, padded_batch
from reference_torch import train as ref_train

CFG = CONFIGS["micro"].replace(dropout=0.0)
OC = OptimConfig(warmup_steps=2, steps=6)


def batches():
    """Rows of very different lengths, so that the two ranks hold different token counts."""
    full = CFG.max_seq_len + 1
    return [padded_batch(CFG, [full, 4, full // 2, 3], seed=i) for i in range(6)]


def one_device_torch(state_dict):
    model, _ = pair(CFG, "torch")
    model.load_state_dict(state_dict)
    opt, sched = ref_train.make_optimizer(model, OC)
    losses = [ref_train.train_step(model, opt, sched, ref_train.to_torch_batch(b), OC.grad_clip) for b in batches()]
    return losses, {k: v.detach().numpy() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def runs():
    model, params = pair(CFG, "torch")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"one": one_device_torch(state), "params": params,
            "ddp": ref_train.train_ddp(CFG, OC, state, batches(), world=2, global_mean=True),
            "ddp_naive": ref_train.train_ddp(CFG, OC, state, batches(), world=2, global_mean=False)}


def test_ddp_with_the_global_token_mean_trains_like_one_device(runs):
    (one_losses, one_state), (ddp_losses, ddp_state) = runs["one"], runs["ddp"]
    loss_diff = float(np.max(np.abs(np.array(ddp_losses) - one_losses)))
    assert loss_diff <= 1e-5, f"DDP losses {loss_diff:.2e} from one device's"
    worst = max(float(np.max(np.abs(ddp_state[k] - one_state[k]))) for k in one_state)
    assert worst <= 1e-5, f"DDP params {worst:.2e} from one device's after {len(one_losses)} steps"


def test_ddp_with_each_ranks_own_mean_drifts_when_ranks_hold_different_token_counts(runs):
    (one_losses, one_state), (naive_losses, naive_state) = runs["one"], runs["ddp_naive"]
    assert one_losses[0] == pytest.approx(naive_losses[0], abs=1e-5)  # same weights before the first update
    worst = max(float(np.max(np.abs(naive_state[k] - one_state[k]))) for k in one_state)
    assert worst > 1e-4, f"the mean of per-rank means should train differently, got params {worst:.2e} apart"


def test_ddp_and_jax_give_the_same_losses(runs):
    import jax

    from guppy_jax.core.steps import create_state, make_train_step
    state = create_state(CFG, OC, runs["params"])
    step = make_train_step(dropout=False)
    jax_losses = []
    for b in batches():
        state, metrics = step(state, jax_batch(b), jax.random.key(0))
        jax_losses.append(float(metrics["loss"]))
    diff = float(np.max(np.abs(np.array(jax_losses) - runs["ddp"][0])))
    assert diff <= 1e-5, f"JAX losses {diff:.2e} from torch DDP's"
    assert torch.distributed.is_available()
