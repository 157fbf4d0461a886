"""Which precision a run computes in, chosen for the device it runs on.

    auto       float32 on a CPU (half precision is slower there); on a GPU, bfloat16 where
               it is fast (compute capability 8.0 and up: A100, H100, RTX 30xx/40xx), else
               float16 with dynamic loss scaling (T4, V100: no fast bfloat16, and XLA's
               bfloat16 fallback can be slower than float32 there); bfloat16 on a TPU
    float32 | bfloat16 | float16    as asked

Params stay float32 whatever the choice; model.py says what runs in half precision.
float16 has a narrow range (largest value 65504), so its gradients are computed on a
scaled loss and unscaled before the update (steps.LossScale).
"""
from __future__ import annotations

import jax.numpy as jnp

DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPUTE = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def resolve(requested: str, device) -> tuple[str, str]:
    """(the dtype to compute in, a short reason) for `device` (a jax.Device)."""
    if requested != "auto":
        return requested, "asked for with --dtype"
    if device.platform == "cpu":
        return "float32", "a CPU: half precision is slower there"
    if device.platform == "tpu":
        return "bfloat16", "a TPU"
    capability = float(getattr(device, "compute_capability", None) or 0)
    name = f"{device.device_kind} (compute capability {capability:g})"
    if capability >= 8.0:
        return "bfloat16", f"{name} has fast bfloat16"
    return "float16", f"{name} has no fast bfloat16: float16 with dynamic loss scaling"


def compute_dtype(name: str):
    return COMPUTE[name]


def needs_loss_scaling(name: str) -> bool:
    return name == "float16"
