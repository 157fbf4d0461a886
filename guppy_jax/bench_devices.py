"""`python -m guppy_jax.bench --devices N`: the JAX train step on 1, 2, 4 ... N devices of a
data-parallel mesh, the global batch fixed (strong scaling), with each count's step time and
its scaling efficiency, t(1) / (n x t(n)): 1.0 is a perfect n-fold speed-up.

On forced CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) the "devices"
share the same cores, so the figures only show that the path works; on a machine with
several GPUs they are the real thing.
"""
from __future__ import annotations

import statistics
import time


def device_counts(n_max: int) -> list[int]:
    counts, n = [], 1
    while n < n_max:
        counts.append(n)
        n *= 2
    return counts + [n_max]


def time_on_mesh(cfg, batches, n_devices: int, steps: int) -> float:
    """Median seconds per train step on a data mesh of the first n devices."""
    import jax

    from .config import OptimConfig
    from .mesh import make_mesh, place_batch, place_state
    from .model import init_params
    from .steps import create_state, make_train_step
    mesh = make_mesh({"data": n_devices, "fsdp": 1}, jax.devices()[:n_devices])
    state = place_state(create_state(cfg, OptimConfig(), init_params(cfg, jax.random.key(0))), mesh)
    placed = [place_batch(b, mesh) for b in batches]
    step, rng = make_train_step(), jax.random.key(1)
    state, m = step(state, placed[0], rng)  # compile
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        t = time.perf_counter()
        state, m = step(state, placed[(i + 1) % len(placed)], rng)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def scaling(cfg, batches, n_max: int, steps: int, quiet: bool = False) -> list[dict]:
    import jax
    if n_max > jax.device_count():
        raise ValueError(f"--devices {n_max}: JAX sees {jax.device_count()} device(s); on a CPU, force more with "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={n_max}")
    B = len(batches[0]["inputs"])
    if B % n_max:
        raise ValueError(f"--devices {n_max}: the batch of {B} rows does not split over {n_max} devices")
    rows = []
    for n in device_counts(n_max):
        step_s = time_on_mesh(cfg, batches, n, steps)
        first = rows[0]["step_ms"] / 1e3 if rows else step_s
        rows.append({"devices": n, "step_ms": step_s * 1e3, "speedup": first / step_s,
                     "efficiency": first / (n * step_s)})
        if not quiet:
            r = rows[-1]
            print(f"  {n} device(s): {r['step_ms']:8.1f} ms/step  speed-up {r['speedup']:.2f}x  "
                  f"efficiency {r['efficiency']:.0%}", flush=True)
    return rows
