"""Train JAX and the PyTorch reference side by side: `python -m guppy_jax.compare`.

Both start from the same weights (initialised in JAX, converted to PyTorch) and see the
same batches in the same order; dropout is off unless --dropout. Writes compare.png (both
loss curves, and their difference) and compare.json (every loss, the differences, the
wall time of each framework) into --out. Needs the `torch` extra.
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
                          args.quiet)
    except DataError as err:
        return cli.error(err)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(res, indent=1) + "\n")
    plot_compare(res, out / "compare.png")
    print(f"max |loss diff| over {res['steps']} steps: {res['max_abs_diff']:.2e} (last step "
          f"{res['final_abs_diff']:.2e}); wall: jax {res['wall_s']['jax']:.1f}s, torch "
          f"{res['wall_s']['torch']:.1f}s; wrote {out / 'compare.png'} and {out / 'compare.json'}")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
