"""Where the JAX training step's time goes, op by op, and what the gradient fence saves.

    python scripts/profile_step.py                           # the 9M model, batch 32 x 48
    python scripts/profile_step.py --preset cpu --seq-len 128
    python scripts/profile_step.py --without-fence           # also time it without the gradient fence

Times the jitted loss-and-gradient of a preset's model (the train step without the AdamW
update), median of --calls calls, then records a few calls with `jax.profiler` and prints
the ops that took the most time. An op is named by its kind and by the model code that made
it (XLA's `op_name` metadata; `transpose(jvp(...))` is the backward pass), with the layers
summed ("blocks_i"). With --without-fence, the same is done again in the same process with
`guppy_jax.core.model.GRADIENT_FENCE` off, which makes `norm_input` (the gradient fence before each
LayerNorm) the plain identity.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from guppy_jax.core import model  # noqa: E402
from guppy_jax.core.config import PRESETS  # noqa: E402
from guppy_jax.core.steps import batch_loss  # noqa: E402


def loss_and_grad(cfg):
    apply_fn = model.GuppyLM(cfg).apply  # a new function each time: its own trace and compile
    return jax.jit(jax.value_and_grad(lambda params, batch: batch_loss(apply_fn, params, batch)))


def median_ms(fn, args, calls: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def op_sources(hlo_text: str) -> dict:
    """HLO instruction name -> the model code that made it (its op_name, layers merged)."""
    found = {}
    for name, source in re.findall(r'%([\w.\-]+) = [^\n]*?op_name="([^"]+)"', hlo_text):
        found[name] = re.sub(r"blocks_\d+", "blocks_i", source.split("/", 1)[-1])
    return found


def profile_ops(fn, args, calls: int) -> collections.Counter:
    """Milliseconds per call spent in each (op kind, source), from a perfetto trace."""
    sources = op_sources(fn.lower(*args).compile().as_text())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(fn(*args))
        trace_file = next(Path(tmp).rglob("perfetto_trace.json.gz"))
        events = json.load(gzip.open(trace_file))
    events = events["traceEvents"] if isinstance(events, dict) else events
    spent = collections.Counter()
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or "dur" not in event or name.startswith(("Thunk", "$")):
            continue
        kind = re.sub(r"\.\d+$", "", name)
        spent[(kind, sources.get(name, "?"))] += event["dur"] / 1e3 / calls
    return spent


def report(label: str, fn, args, opts) -> None:
    print(f"{label}: loss and gradient, median of {opts.calls} calls: {median_ms(fn, args, opts.calls):.1f} ms")
    spent = profile_ops(fn, args, opts.profile_calls)
    print(f"  profiled: {sum(spent.values()):.1f} ms of op time per call; the top {opts.top}:")
    for (kind, source), ms in spent.most_common(opts.top):
        print(f"  {ms:8.2f} ms  {kind:28s} {source}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="guppy-9m")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=48, help="tokens per row (48: the original's mean batch width)")
    parser.add_argument("--calls", type=int, default=10, help="timed calls")
    parser.add_argument("--profile-calls", type=int, default=3, help="profiled calls")
    parser.add_argument("--top", type=int, default=25, help="ops to list")
    parser.add_argument("--without-fence", action="store_true", help="also time and profile without the gradient fence")
    opts = parser.parse_args(argv)
    cfg = PRESETS[opts.preset].model
    tokens = jax.random.randint(jax.random.key(0), (opts.batch_size, opts.seq_len + 1), 0, cfg.vocab_size)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": jnp.ones(tokens[:, 1:].shape, bool)}
    args = (model.init_params(cfg, jax.random.key(1)), batch)
    print(f"{opts.preset}, batch {opts.batch_size} x {opts.seq_len}, {jax.devices()[0].platform}, jax {jax.__version__}")
    report("with the fence", loss_and_grad(cfg), args, opts)
    if opts.without_fence:
        with model.gradient_fence(False):  # read when loss_and_grad is traced
            report("without the fence", loss_and_grad(cfg), args, opts)


if __name__ == "__main__":
    main()
