"""Print the parity table: every compared quantity, its measured difference and its tolerance.

    python -m parity_tests.report            # the 9M config (minutes: README gives a time)
    python -m parity_tests.report --model micro
    python -m parity_tests.report --markdown # the table as in the README
    python -m parity_tests.report --no-nnx   # without the NNX model's rows

Rows that repeat per layer are folded into one (the worst layer), so the table stays short;
the tests in parity_tests/ assert every single quantity.
"""
from __future__ import annotations

import argparse
import re
import sys

from guppy_jax.core.config import PARITY_MODELS, OptimConfig
from parity_tests.measure import (FIFTY_UPDATES, FLOAT32_9M_TOLERANCES, ONE_UPDATE, SCHEDULE_STEPS,
                                  Check, check_causality, check_float16_training, check_forward, check_greedy,
                                  check_loss_and_grads, check_packing, check_schedule, check_training,
                                  parity_precision)


def collect(cfg, big: bool, nnx: bool = True) -> list[Check]:
    tol = FLOAT32_9M_TOLERANCES if big else {}
    checks: list[Check] = []
    for source in ("torch", "flax"):
        checks += check_forward(cfg, source)
        checks += check_loss_and_grads(cfg, source, grad_tol=tol.get("grad", 1e-5))
        if big:
            checks += check_loss_and_grads(cfg, source, "float64")
    checks += check_schedule(OptimConfig(), SCHEDULE_STEPS)
    for source in ("torch", "flax"):
        for dtype in (("float32", "float64") if big else ("float32",)):
            loose = big and dtype == "float32"
            checks += check_training(cfg, source, 1, ONE_UPDATE, dtype,
                                     param_tol=tol["params after 1"] if loose else None)
            checks += check_training(cfg, source, 50, FIFTY_UPDATES, dtype,
                                     param_tol=tol["params after 50"] if loose else None,
                                     curve_tol=tol["loss curve"] if loose else 1e-4)
    checks += check_greedy(cfg)[0] + check_packing(cfg) + check_causality(cfg)
    # float16 against the original's AMP loop, on the micro model at any size (it is the
    # scaler's rules being compared; the 9M model adds only minutes)
    checks += check_float16_training(PARITY_MODELS["micro"], n_steps=50, growth_interval=10, overflow_at=25)[0]
    if nnx:  # the third model: Flax NNX against Linen and the reference (parity_tests/nnx_measure.py)
        from parity_tests.nnx_measure import collect_nnx
        checks += collect_nnx(cfg)
    return checks


def fold(checks: list[Check]) -> list[Check]:
    """One row per quantity with the layer index (and lr step) folded: the worst case is kept."""
    rows: dict[str, Check] = {}
    for c in checks:
        name = re.sub(r"blocks\.\d+\.", "blocks.*.", c.name)
        name = re.sub(r"lr at update \d+", "lr at updates " + ",".join(map(str, SCHEDULE_STEPS)), name)
        worst = rows.get(name)
        if worst is None or _ratio(c) > _ratio(worst):
            rows[name] = Check(name, c.diff, c.tol, c.what)
    return list(rows.values())


def _ratio(c: Check) -> float:
    return c.diff / c.tol if c.tol else (float("inf") if c.diff else 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", "--config", dest="model", choices=sorted(PARITY_MODELS), default="guppy-9m",
                        help="parity model: guppy-9m (the original) or micro (seconds)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--no-nnx", action="store_true", help="leave out the NNX model's rows")
    args = parser.parse_args(argv)
    cfg = PARITY_MODELS[args.model]
    with parity_precision():
        checks = collect(cfg, big=args.model == "guppy-9m", nnx=not args.no_nnx)
    return print_table(checks, args.model, args.markdown)


def print_table(checks: list[Check], model: str, markdown: bool = False) -> int:
    """Print the folded rows and the count out of tolerance; 1 if any is, else 0."""
    rows = fold(checks)
    width = max(len(r.name) for r in rows)
    if markdown:
        print("| quantity | measure | measured | tolerance | ok |\n|---|---|---:|---:|:-:|")
    for r in rows:
        mark = "yes" if r.ok else "NO"
        if markdown:
            print(f"| {r.name} | {r.what} | {r.diff:.2e} | {r.tol:.0e} | {mark} |")
        else:
            print(f"{r.name:<{width}}  {r.what:<24} {r.diff:9.2e}  tol {r.tol:7.0e}  {mark}")
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks)} quantities compared ({model}), {len(failed)} out of tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
