"""Runs in a subprocess with forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N),
for tests/test_mesh.py: the device count is fixed when JAX's backend starts, so each test
that needs several devices starts one of these and reads the JSON it prints.

    python -m tests.mesh_worker same-training DTYPE DROPOUT   # 20 steps on 1, 2, 4 and 8 devices
    python -m tests.mesh_worker global-mean                   # one loss over rows of very different lengths
"""
from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from guppy_jax.core.config import PRESETS, OptimConfig
from guppy_jax.data.batches import shifted_batch
from guppy_jax.training.mesh import make_mesh, place_batch, place_state
from guppy_jax.core.model import init_params
from guppy_jax.core.steps import batch_loss, create_state, make_train_step

CFG = PRESETS["tiny"].model


def batches(n: int, rows: int = 8) -> list[dict]:
    """Fixed batches whose rows have very different lengths (3 to the whole context)."""
    rs = np.random.RandomState(0)
    out = []
    for _ in range(n):
        lengths = rs.randint(3, CFG.max_seq_len + 2, rows)
        out.append(shifted_batch([rs.randint(3, CFG.vocab_size, k) for k in lengths], CFG.max_seq_len + 1, CFG.pad_id))
    return out


def train_on(n_devices: int, dtype, dropout: bool, steps: int = 20):
    """Losses of `steps` train steps on a data mesh of the first n devices, and the final params."""
    mesh = make_mesh({"data": n_devices, "fsdp": 1}, jax.devices()[:n_devices])
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), init_params(CFG, jax.random.key(0)))
    state = place_state(create_state(CFG, OptimConfig(warmup_steps=5, steps=steps), params, dtype), mesh)
    step = make_train_step(dropout=dropout)
    losses = []
    for batch in batches(steps):
        state, metrics = step(state, place_batch(batch, mesh), jax.random.key(7))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state.params), step.traces()


def same_training(dtype_name: str, dropout: str) -> dict:
    dtype = jnp.float64 if dtype_name == "float64" else jnp.float32
    base_losses, base_params, _ = train_on(1, dtype, dropout == "dropout")
    result = {}
    for n in (2, 4, 8):
        losses, params, compiles = train_on(n, dtype, dropout == "dropout")
        param_diff = max(float(np.max(np.abs(a - b))) for a, b in
                         zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(base_params)))
        result[n] = {"loss_diff": float(np.max(np.abs(np.array(losses) - base_losses))), "param_diff": param_diff,
                     "compiles": compiles}
    return result


def global_mean() -> dict:
    """The loss of one batch on 4 devices, on 1 device, and the mean of the 4 devices' own means."""
    batch = batches(1)[0]
    params = init_params(CFG, jax.random.key(0))
    state = create_state(CFG, OptimConfig(), params)
    loss_fn = jax.jit(lambda p, b: batch_loss(state.apply_fn, p, b))
    mesh = make_mesh({"data": 4, "fsdp": 1}, jax.devices()[:4])
    on_mesh = float(loss_fn(place_state(params, mesh), place_batch(batch, mesh)))
    alone = float(loss_fn(params, batch))
    quarters = [{k: v[i * 2:(i + 1) * 2] for k, v in batch.items()} for i in range(4)]
    mean_of_means = float(np.mean([float(loss_fn(params, q)) for q in quarters]))
    real_per_device = [int(q["loss_mask"].sum()) for q in quarters]
    return {"on_mesh": on_mesh, "alone": alone, "mean_of_means": mean_of_means, "real_per_device": real_per_device}


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "same-training":
        if sys.argv[2] == "float64":
            jax.config.update("jax_enable_x64", True)
        print(json.dumps(same_training(sys.argv[2], sys.argv[3])))
    elif mode == "global-mean":
        print(json.dumps(global_mean()))
    else:
        sys.exit(f"unknown mode {mode}")
