"""Can XLA:CPU decode faster from int8 weights? A probe, run by hand (BENCHMARKS.md).

    python scripts/int8_decode_probe.py [--preset guppy-9m] [--steps 64]

Batch-1 decoding reads every weight once per token, so int8 weights (a quarter of the
bytes) could be up to 4x faster if the matmuls read them as int8. This times the matmuls
of one decode step of the preset's model (per layer qkv, out, up, down, then the tied
output head), chained through `steps` steps inside one jitted fori_loop, three ways:

    float32        the weights as they are
    int8 weights   int8 kernels with per-output-channel float32 scales, converted to
                   float32 inside the jitted step (weight-only quantization)
    int8 x int8    activations quantized too, int8 dot with int32 accumulation

and prints ms per step, the bytes each reads, and the int8 matmul's error against float32.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, installed or not
from guppy_jax.core.config import PRESETS  # noqa: E402


def layer_kernels(cfg, rs) -> list[np.ndarray]:
    d, f = cfg.d_model, cfg.ffn_hidden
    shapes = [(d, 3 * d), (d, d), (d, f), (f, d)] * cfg.n_layers + [(d, cfg.vocab_size)]
    return [(rs.standard_normal(s) * 0.02).astype(np.float32) for s in shapes]


def quantize(w_IO: np.ndarray):
    scale_O = np.abs(w_IO).max(axis=0) / 127.0
    return np.round(w_IO / scale_O).astype(np.int8), scale_O.astype(np.float32)


def matmul_f32(w, x_1I):
    return x_1I @ w


def matmul_int8_weights(w, x_1I):
    q_IO, scale_O = w
    return (x_1I @ q_IO.astype(jnp.float32)) * scale_O


def matmul_int8_both(w, x_1I):
    q_IO, scale_O = w
    a = jnp.abs(x_1I).max() / 127.0 + 1e-12
    acc_1O = jax.lax.dot(jnp.round(x_1I / a).astype(jnp.int8), q_IO, preferred_element_type=jnp.int32)
    return acc_1O.astype(jnp.float32) * a * scale_O


def step_ms(matmul, weights, d: int, steps: int, repeats: int = 9) -> float:
    """Median ms per step of `steps` chained decode-step matmul sets in one jitted loop."""
    def one_step(_, x_1D):
        y = x_1D
        for w in weights:  # each output is cut or tiled to the next kernel's input width
            n_in = (w[0] if isinstance(w, tuple) else w).shape[0]
            y = jnp.tanh(matmul(w, jnp.resize(y, (1, n_in))))
        return y[:, :d]
    run = jax.jit(lambda ws, x: jax.lax.fori_loop(0, steps, one_step, x))
    x = jnp.ones((1, d), jnp.float32)
    run(weights, x).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(weights, x).block_until_ready()
        times.append((time.perf_counter() - t) / steps * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="guppy-9m")
    p.add_argument("--steps", type=int, default=64)
    args = p.parse_args()
    cfg = PRESETS[args.preset].model
    kernels = layer_kernels(cfg, np.random.default_rng(0))
    quantized = [quantize(w) for w in kernels]
    f32 = [jnp.asarray(w) for w in kernels]
    i8 = [(jnp.asarray(q), jnp.asarray(s)) for q, s in quantized]
    x = jnp.asarray(np.random.default_rng(1).standard_normal((1, cfg.d_model)), jnp.float32)
    err = float(jnp.abs(matmul_int8_weights(i8[0], x) - matmul_f32(f32[0], x)).max())
    mb_f32 = sum(w.nbytes for w in kernels) / 1e6
    mb_i8 = sum(q.nbytes + s.nbytes for q, s in quantized) / 1e6
    print(f"{args.preset}: decode-step matmuls, {args.steps} steps per call, jax {jax.__version__}")
    for name, fn, ws, mb in (("float32", matmul_f32, f32, mb_f32), ("int8 weights", matmul_int8_weights, i8, mb_i8),
                             ("int8 x int8", matmul_int8_both, i8, mb_i8)):
        print(f"  {name:<13} {step_ms(fn, ws, cfg.d_model, args.steps):6.2f} ms/step   {mb:5.1f} MB read")
    print(f"  int8-weight qkv output vs float32: max |diff| {err:.2e}")


if __name__ == "__main__":
    main()
