"""Time JAX against the PyTorch reference in one process: `python -m guppy_jax.bench`.

Two training comparisons, then generation:
  same work   both frameworks on the same padded batches of one shape (B, T);
  end to end  the JAX pipeline as `guppy_jax.train` runs it (packed fixed-shape rows)
              against a PyTorch loop fed the original's way (each batch padded to its own
              longest sample), in non-pad tokens per second, batching included;
  generation  tokens/s of a 64-token answer at batch 1 and at the eval's batch of 36:
              KV-cached JAX, the reference's KV-cached eager decoder, and the original's
              re-run-everything sampler; batch-1 decode steps against the memory floor;
  Flax APIs   the same train step and batch-1 decode step in Linen (jax.jit), NNX
              (nnx.jit) and NNX split/merge inside jax.jit: ms per call, first call and
              the compiled program's temporary memory (the nnx_* ratios; --no-nnx skips).
Timings are medians over --steps after warm-up (the first call, compilation included, is
reported apart). Needs the `torch` extra. The measurements live in guppy_jax/analysis/timing.py.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import cli
from .analysis.apis import print_apis
from .analysis.timing import bench_device_scaling, bench_frameworks
from .core.config import PRESETS


def print_table(res):
    print(f"\n{res['device']} ({res['backend']}), {res['config']} ({res['params']:,} params), "
          f"batch {res['batch'][0]} x {res['batch'][1]}, {res['date']}, jax {res['jax']}, torch {res['torch']}")
    print(f"{'comparison':<11} {'framework':<26} {'median step':>12} {'tokens/s':>11} {'first call':>11} "
          f"{'peak mem':>10} {'MFU':>6}")
    for r in res["rows"]:
        if "error" in r:
            print(f"{r['comparison']:<11} {r['framework']:<26} failed: {r['error'][:60]}")
            continue
        mem = f"{r['peak_mem_bytes'] / 2**20:.0f} MiB" if r.get("peak_mem_bytes") else "n/a"
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
        first = f"{r['first_call_s']:.1f} s" if r.get("first_call_s") is not None else "-"
        step = (f"{r['median_step_ms']:9.1f} ms" if "median_step_ms" in r
                else f"{r['mean_step_ms']:7.1f} ms*")  # end to end: mean over the timed loop
        print(f"{r['comparison']:<11} {r['framework']:<26} {step} {r['tokens_per_s']:11,.0f} "
              f"{first:>11} {mem:>10} {mfu:>6}")
    g = res["generation"]
    for label, batch in (("batch1", 1), ("batch_eval", g["eval_batch"])):
        print(f"generation  {g['new_tokens']} new tokens x batch {batch}: jax cached {g[label + '_jax_cached']:,.0f} "
              f"tok/s, torch cached {g[label + '_torch_cached']:,.0f}, torch original {g[label + '_torch_original']:,.0f}")
    print(f"decode      batch 1: {g['decode_step_ms']:.2f} ms a step; floor {g['floor_ms']:.2f} ms = "
          f"{g['weight_bytes'] / 1e6:.1f} MB of weights / {g['read_gb_per_s']:.1f} GB/s read")
    print("ratios (JAX / PyTorch): " + ", ".join(f"{k} {v:.2f}x" for k, v in res["ratios"].items()
                                              if not k.startswith(("nnx_", "decode_nnx_"))))
    if res.get("apis"):
        print_apis(res["apis"])
    print(f"process peak RSS {res['process_peak_rss_mb']:.0f} MiB (both frameworks together); "
          f"tokens/s count non-pad tokens; * mean step of the whole timed loop, batching included; "
          f"MFU needs a known peak (--peak-tflops)")


def build_parser():
    p = cli.make_parser("bench", __doc__)
    cli.add_preset(p, PRESETS, "model preset to time", default="guppy-9m", legacy_alias=True)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="JAX's compute dtype (auto: as train picks it); with a half dtype the reference "
                        "is also timed with the original's autocast")
    p.add_argument("--steps", type=cli.positive_int, default=20, help="timed steps per measurement (after warm-up)")
    p.add_argument("--batch-size", type=cli.positive_int, help="default: the preset's")
    cli.add_data_dir(p)
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--no-nnx", action="store_true", help="skip the Linen-against-NNX rows")
    p.add_argument("--steps-per-call", type=cli.positive_int, nargs="+", default=[1, 4],
                   help="JAX variants: k train steps per jitted call (lax.scan)")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU, if not in the built-in table")
    p.add_argument("--devices", type=cli.positive_int, metavar="N",
                   help="instead of the comparisons: the JAX step on 1, 2, 4 ... N devices of a data mesh, "
                        "with its scaling efficiency (on a CPU, force devices with XLA_FLAGS=--xla_force_host_"
                        "platform_device_count=N)")
    p.add_argument("--json", help="write the results here")
    cli.add_quiet(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .data.batches import DataError
    try:
        if args.devices:
            res = bench_device_scaling(args.preset, args.devices, args.steps, args.batch_size, args.data_dir, args.quiet)
        else:
            res = bench_frameworks(args.preset, args.device, args.steps, args.batch_size, args.data_dir, not args.no_torch_compile,
                      tuple(args.steps_per_call), quiet=args.quiet, peak_tflops=args.peak_tflops, dtype=args.dtype,
                      apis=not args.no_nnx)
    except DataError as err:
        return cli.error(err)
    except ValueError as err:
        return cli.error(err, cli.EXIT_USAGE)
    if not args.devices:
        print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main, compile_cache=False)  # it times compilation
