"""The precision a run computes in, chosen for the device."""
from types import SimpleNamespace

import jax.numpy as jnp
import pytest

from guppy_jax.core.precision import compute_dtype, needs_loss_scaling, resolve


def gpu(kind, capability):
    return SimpleNamespace(platform="gpu", device_kind=kind, compute_capability=capability)


@pytest.mark.parametrize("device, want", [
    (SimpleNamespace(platform="cpu", device_kind="cpu"), "float32"),
    (gpu("Tesla T4", "7.5"), "float16"),
    (gpu("Tesla V100-SXM2-16GB", "7.0"), "float16"),
    (gpu("NVIDIA A100-SXM4-40GB", "8.0"), "bfloat16"),
    (gpu("NVIDIA H100 80GB HBM3", "9.0"), "bfloat16"),
    (SimpleNamespace(platform="tpu", device_kind="TPU v4"), "bfloat16"),
])
def test_auto_picks_what_the_device_is_fast_at(device, want):
    got, why = resolve("auto", device)
    assert got == want and why
    assert needs_loss_scaling(got) == (want == "float16")


def test_an_explicit_choice_wins():
    assert resolve("float32", gpu("Tesla T4", "7.5"))[0] == "float32"
    assert resolve("float16", SimpleNamespace(platform="cpu"))[0] == "float16"
    assert compute_dtype("float16") == jnp.float16 and compute_dtype("bfloat16") == jnp.bfloat16
