"""Train JAX and the PyTorch reference side by side: `python -m guppy_jax.compare`.

Both start from the same weights (initialised in JAX, converted to PyTorch) and see the
same batches in the same order; dropout is off unless --dropout. --nnx adds the Flax NNX
twin of the model (guppy_jax/core/nnx_model.py) as a third, from the same weights. Writes
compare.png (the loss curves, and their differences) and compare.json (every loss, the
differences, each framework's first step and median step time) into --out, and prints the
step times as a table. Needs the `torch` extra.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import cli
from .analysis.comparison import plot_compare, run_compare
from .core.config import PRESETS


def build_parser():
    p = cli.make_parser("compare", __doc__)
    cli.add_preset(p, PRESETS, "model and batch preset", default="guppy-9m", legacy_alias=True)
    p.add_argument("--steps", type=cli.positive_int, default=100, help="training steps for both")
    p.add_argument("--dropout", action="store_true", help="train with dropout (each framework its own RNG)")
    p.add_argument("--nnx", action="store_true", help="also train the Flax NNX model beside Linen and PyTorch")
    p.add_argument("--batch-size", type=cli.positive_int, help="default: the preset's")
    cli.add_data_dir(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare", help="directory for compare.png and compare.json")
    cli.add_quiet(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .data.batches import DataError
    try:
        res = run_compare(args.preset, args.steps, args.dropout, args.data_dir, args.seed, args.batch_size,
                          args.quiet, args.nnx)
    except DataError as err:
        return cli.error(err)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(res, indent=1) + "\n")
    plot_compare(res, out / "compare.png")
    names = {"jax": "JAX, Flax Linen", "nnx": "JAX, Flax NNX", "torch": "PyTorch reference"}
    print(f"\n{'':<18} {'median step':>12} {'first step':>11} {'total':>8}")
    for key, ms in res["median_step_ms"].items():
        print(f"{names[key]:<18} {ms:9.1f} ms {res['first_step_s'][key]:9.2f} s {res['wall_s'][key]:6.1f} s")
    print(f"\nmax |loss diff| JAX - PyTorch over {res['steps']} steps: {res['max_abs_diff']:.2e} (last step "
          f"{res['final_abs_diff']:.2e})" + (f"; NNX - Linen: {res['nnx_max_abs_diff']:.2e}" if args.nnx else ""))
    print(f"wrote {out / 'compare.png'} and {out / 'compare.json'}")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
