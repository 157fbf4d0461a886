"""The pieces of `python -m guppy_jax.bench --devices N`, which times the JAX train step
(bench_jax_steps) on 1, 2, 4 ... N devices of a data-parallel mesh, the global batch fixed
(strong scaling), and reports each count's step time and its scaling efficiency,
t(1) / (n x t(n)): 1.0 is a perfect n-fold speed-up.

On forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) the "devices"
share the same cores, so the figures only show that the path works; on a machine with
several GPUs they are the real thing.
"""
from __future__ import annotations


def device_counts(n_max: int) -> list[int]:
    counts, n = [], 1
    while n < n_max:
        counts.append(n)
        n *= 2
    return counts + [n_max]


def check_devices(n_max: int, batch_rows: int) -> None:
    """ValueError unless JAX sees n_max devices and the batch splits over them."""
    import jax
    if n_max > jax.device_count():
        raise ValueError(f"--devices {n_max}: JAX sees {jax.device_count()} device(s); on a CPU, force more with "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={n_max}")
    if batch_rows % n_max:
        raise ValueError(f"--devices {n_max}: the batch of {batch_rows} rows does not split over {n_max} devices")


def scaling_rows(step_s: dict[int, float]) -> list[dict]:
    """Each device count's step time, speed-up and efficiency against the first count's."""
    first = step_s[min(step_s)]
    return [{"devices": n, "step_ms": s * 1e3, "speedup": first / s, "efficiency": first / (n * s)}
            for n, s in sorted(step_s.items())]
