"""Decoding speed of the JAX sampler alone: the batch-1 decode step and `generate` tokens/s.

    python scripts/time_generation.py                    # the 9M model, as in BENCHMARKS.md
    python scripts/time_generation.py --preset cpu --batches 1 36

Run it in two worktrees, one after the other and in turn, to compare two versions of
generate.py or model.py: `bench` times the PyTorch decoders too, and takes minutes.
Random weights, so every answer runs to its full length.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402

from guppy_jax.analysis.decode import PROMPT, decode_step_s, median_rate  # noqa: E402
from guppy_jax.core.config import PRESETS  # noqa: E402
from guppy_jax.core.generate import generate  # noqa: E402
from guppy_jax.core.model import init_params  # noqa: E402


def tokens_per_s(cfg, params, batch: int, temperature: float, new_tokens: int, calls: int) -> float:
    """Median tokens/s of `calls` generate() calls (after one that compiles)."""
    prompts, keys = [PROMPT] * batch, itertools.count()

    def run() -> int:
        made = generate(cfg, params, prompts, jax.random.key(next(keys)), max_new_tokens=new_tokens,
                        temperature=temperature)
        return sum(map(len, made))
    run()
    return median_rate(run, calls)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="guppy-9m")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 36], help="batch sizes to generate at")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 0.0], help="0 is greedy")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5, help="timed generate() calls per setting")
    opts = parser.parse_args(argv)
    cfg = PRESETS[opts.preset].model
    params = init_params(cfg, jax.random.key(0))
    print(f"{opts.preset}: batch-1 decode step {decode_step_s(cfg, params, n=opts.new_tokens, repeats=7) * 1e3:.2f} ms "
          f"(median of 7 x {opts.new_tokens} steps)")
    for batch in opts.batches:
        for temperature in opts.temperatures:
            rate = tokens_per_s(cfg, params, batch, temperature, opts.new_tokens, opts.calls)
            print(f"  generate, batch {batch}, temperature {temperature:g}: {rate:,.0f} tokens/s")


if __name__ == "__main__":
    main()
