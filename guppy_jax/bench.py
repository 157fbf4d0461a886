"""Time JAX against the PyTorch reference in one process: `python -m guppy_jax.bench`.

Two training comparisons, then generation:
  same work   both frameworks on the same padded batches of one shape (B, T);
  end to end  the JAX pipeline as `guppy_jax.train` runs it (packed fixed-shape rows)
              against a PyTorch loop fed the original's way (each batch padded to its own
              longest sample), in non-pad tokens per second, batching included;
  generation  tokens/s of a 64-token answer: KV-cached JAX against the reference's
              re-run-everything sampler.
Timings are medians over --steps after warm-up (the first call, compilation included, is
reported apart). Needs the `torch` extra.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from .config import PRESETS, OptimConfig

# Dense peak FLOP/s by device name and compute dtype, where known (vendor datasheets).
PEAK_TFLOPS = {"H100": {"float32": 67.0, "tf32": 495.0, "bfloat16": 989.0},
               "H200": {"float32": 67.0, "tf32": 495.0, "bfloat16": 989.0},
               "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0},
               "T4": {"float32": 8.1, "float16": 65.0}}


def flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul params, the tied head included) + attention."""
    matmul_params = cfg.num_params() - cfg.max_seq_len * cfg.d_model  # position table is a lookup
    return 6 * matmul_params + 12 * cfg.n_layers * seq_len * cfg.d_model


def _median_ms(times):
    return 1000 * statistics.median(times)


def load_samples(cfg, data_dir):
    from .data import encode_texts, load_texts
    from .prepare import DEFAULT_OUT, prepare
    from .tokenizer import load_tokenizer
    data_dir = Path(data_dir)
    if not (data_dir / "train.jsonl").exists() and data_dir.resolve() == DEFAULT_OUT.resolve():
        prepare(out=data_dir, quiet=True)
    tok = load_tokenizer(data_dir)
    return encode_texts(tok, load_texts(data_dir / "train.jsonl"), cfg.max_seq_len).samples


def bench_jax_steps(cfg, batches, n, steps_per_call=1, device=None):
    """(compile+first call s, median s per step) for the jitted train step."""
    import jax

    from .model import init_params
    from .steps import create_state, train_step, train_steps
    rng = jax.random.key(1)
    with jax.default_device(device):
        state = create_state(cfg, OptimConfig(), init_params(cfg, jax.random.key(0)))
        if steps_per_call == 1:
            fn = jax.jit(lambda s, b: train_step(s, b, rng), donate_argnums=0)
            calls = [batches[i % len(batches)] for i in range(n + 1)]
        else:
            fn = jax.jit(lambda s, b: train_steps(s, b, rng), donate_argnums=0)
            groups = [[batches[(g * steps_per_call + j) % len(batches)] for j in range(steps_per_call)]
                      for g in range(max(3, n // steps_per_call) + 1)]  # >= 3 timed calls
            calls = [jax.tree_util.tree_map(lambda *x: np.stack(x), *grp) for grp in groups]
        calls = [jax.device_put(c, device) for c in calls]
        t = time.perf_counter()
        state, m = fn(state, calls[0])
        jax.block_until_ready(m)
        first = time.perf_counter() - t
        times = []
        for c in calls[1:]:
            t = time.perf_counter()
            state, m = fn(state, c)
            jax.block_until_ready(m)
            times.append((time.perf_counter() - t) / steps_per_call)
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use") if hasattr(device, "memory_stats") else None
    return first, statistics.median(times), peak


def bench_torch_steps(cfg, batches, n, dev, compile_model=False):
    import torch

    from reference_torch.model import GuppyLM
    from reference_torch.train import make_optimizer, to_torch_batch, train_step
    torch.manual_seed(0)
    model = GuppyLM(cfg).to(dev)
    opt, sched = make_optimizer(model, OptimConfig())
    runner = torch.compile(model) if compile_model else model
    tb = [{k: v.to(dev) for k, v in to_torch_batch(b).items()} for b in batches]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    train_step(runner, opt, sched, tb[0])
    first = time.perf_counter() - t
    times = []
    for i in range(n):
        t = time.perf_counter()
        train_step(runner, opt, sched, tb[(i + 1) % len(tb)])  # .item() inside: synchronous
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    return first, statistics.median(times), peak


def original_style_batches(samples, batch_size, n, pad_id=0):
    """The original's batches: consecutive samples, each batch padded to its own longest."""
    out = []
    for i in range(n):
        rows = [samples[(i * batch_size + j) % len(samples)] for j in range(batch_size)]
        longest = max(len(r) for r in rows)
        seq = np.full((batch_size, longest), pad_id, np.int64)
        for j, r in enumerate(rows):
            seq[j, :len(r)] = r
        targets = seq[:, 1:]
        out.append({"inputs": seq[:, :-1], "targets": targets, "loss_mask": targets != pad_id})
    return out


def end_to_end_jax(cfg, samples, batch_size, n, device, steps_per_call=1):
    """The train loop's pipeline: packed rows, batch building included, metrics a call late,
    `steps_per_call` steps per jitted call as the preset sets it."""
    import jax

    from .data import Batches
    from .model import init_params
    from .steps import create_state, train_step, train_steps
    rng = jax.random.key(1)
    k = steps_per_call
    it = Batches(samples, batch_size, cfg.max_seq_len, packed=True, seed=0)

    def next_call():
        chunk = [next(it) for _ in range(k)]
        return chunk[0] if k == 1 else {key: np.stack([b[key] for b in chunk]) for key in chunk[0]}
    with jax.default_device(device):
        state = create_state(cfg, OptimConfig(), init_params(cfg, jax.random.key(0)))
        fn = jax.jit(lambda s, b: (train_step if k == 1 else train_steps)(s, b, rng), donate_argnums=0)
        state, m = fn(state, next_call())  # compile outside the clock
        jax.block_until_ready(m)
        tokens, pending, calls = 0, None, max(1, n // k)
        t = time.perf_counter()
        for _ in range(calls):
            batch = next_call()
            tokens += int((batch["segment_ids"] > 0).sum())
            state, m = fn(state, batch)
            if pending is not None:
                jax.device_get(pending["loss"])
            pending = m
        jax.device_get(pending["loss"])
        elapsed = time.perf_counter() - t
    return tokens / elapsed, elapsed / (calls * k)


def end_to_end_torch(cfg, samples, batch_size, n, dev):
    import torch

    from reference_torch.model import GuppyLM
    from reference_torch.train import make_optimizer, to_torch_batch, train_step
    torch.manual_seed(0)
    model = GuppyLM(cfg).to(dev)
    opt, sched = make_optimizer(model, OptimConfig())
    warm = original_style_batches(samples, batch_size, 1)[0]
    train_step(model, opt, sched, {k: v.to(dev) for k, v in to_torch_batch(warm).items()})
    tokens = 0
    t = time.perf_counter()
    for b in original_style_batches(samples[batch_size:], batch_size, n):
        tokens += int((b["inputs"] != 0).sum())
        train_step(model, opt, sched, {k: v.to(dev) for k, v in to_torch_batch(b).items()})
    elapsed = time.perf_counter() - t
    return tokens / elapsed, elapsed / n


def bench_generation(cfg, dev_jax, dev_torch, repeats=5, new_tokens=None):
    import jax
    import torch

    from reference_torch.model import GuppyLM
    from reference_torch.model import generate as torch_generate

    from .chat import default_answer_len
    from .convert_weights import params_to_state_dict, to_torch
    from .generate import generate
    new_tokens = new_tokens or default_answer_len(cfg)
    from .model import init_params
    with jax.default_device(dev_jax):
        params = init_params(cfg, jax.random.key(0))
    model = GuppyLM(cfg)
    model.load_state_dict(to_torch(params_to_state_dict(jax.device_get(params), cfg)))
    model = model.to(dev_torch)
    prompt = [1, 300, 201, 400, 2, 201, 1, 283, 201]
    res = {}
    with jax.default_device(dev_jax):
        generate(cfg, params, [prompt], jax.random.key(0), max_new_tokens=new_tokens)  # compile
        rates = []
        for r in range(repeats):
            t = time.perf_counter()
            out = generate(cfg, params, [prompt], jax.random.key(r), max_new_tokens=new_tokens)[0]
            rates.append(len(out) / (time.perf_counter() - t))
        res["jax_cached"] = statistics.median(rates)
    rates = []
    gen = torch.Generator(device=dev_torch).manual_seed(0)
    for r in range(repeats):
        t = time.perf_counter()
        out = torch_generate(model, prompt, new_tokens, 0.7, 50, eos_id=cfg.eos_id, generator=gen)
        rates.append(len(out) / (time.perf_counter() - t))
    res["torch_reference"] = statistics.median(rates)
    res["new_tokens"] = new_tokens
    return res


def device_peak(name: str, dtype: str):
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table.get(dtype)
    return None


def run(config="guppy-9m", device="auto", steps=20, batch_size=None, data_dir=None, torch_compile=True,
        steps_per_call=(1, 4), quiet=False, peak_tflops=None):
    import jax
    import torch

    from .data import make_batch, padded_row_len
    from .prepare import DEFAULT_OUT
    preset = PRESETS[config]
    cfg = preset.model.replace(dropout=0.0)  # timing only: dropout off in both
    B = batch_size or preset.batch_size
    has_gpu = any(d.platform == "gpu" for d in jax.devices()) if device != "cpu" else False
    if device == "gpu" and not has_gpu:
        raise SystemExit("error: --device gpu but JAX sees no GPU")
    use_gpu = device == "gpu" or (device == "auto" and has_gpu)
    dev_jax = jax.devices("gpu")[0] if use_gpu else jax.devices("cpu")[0]
    dev_torch = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    samples = load_samples(cfg, data_dir or DEFAULT_OUT)
    T = padded_row_len(samples, cfg.max_seq_len)
    rs = np.random.default_rng(0)
    same = [make_batch([[samples[i]] for i in rs.choice(len(samples), B, replace=False)], T)
            for _ in range(8)]
    device_name = dev_jax.device_kind if use_gpu else (platform.processor() or platform.machine())
    peak = peak_tflops or (device_peak(device_name, "float32") if use_gpu else None)
    flops_tok = flops_per_token(cfg, T)
    rows = []

    def add(comparison, framework, first_s, step_s, tokens_per_step, peak_mem=None, extra=""):
        tps = tokens_per_step / step_s
        mfu = (tps * flops_tok / (peak * 1e12)) if peak else None
        rows.append({"comparison": comparison, "framework": framework, "first_call_s": first_s,
                     "median_step_ms": step_s * 1000, "tokens_per_s": tps, "peak_mem_bytes": peak_mem,
                     "mfu": mfu, "note": extra})
        if not quiet:
            print(f"  {comparison:<11} {framework:<26} {step_s * 1000:8.1f} ms/step {tps:10,.0f} tok/s"
                  + (f"  (first call {first_s:.1f}s)" if first_s is not None else "") + (f"  {extra}" if extra else ""),
                  flush=True)

    if not quiet:
        print(f"device: {device_name} ({'gpu' if use_gpu else 'cpu'}), config {config} "
              f"({cfg.num_params():,} params), batch {B} x {T}, {steps} timed steps")
    real_tokens = float(np.mean([(b["segment_ids"] > 0).sum() for b in same]))
    for k in steps_per_call:
        f, s, pm = bench_jax_steps(cfg, same, steps, k, dev_jax)
        add("same work", "jax jit" + (f" ({k} steps/call)" if k > 1 else ""), f, s, real_tokens, pm)
    f, s, pm = bench_torch_steps(cfg, same, steps, dev_torch)
    add("same work", "torch eager", f, s, real_tokens, pm)
    if torch_compile:
        try:
            f, s, pm = bench_torch_steps(cfg, same, steps, dev_torch, compile_model=True)
            add("same work", "torch.compile", f, s, real_tokens, pm)
        except Exception as err:  # inductor needs a working compiler toolchain
            rows.append({"comparison": "same work", "framework": "torch.compile", "error": str(err)[:300]})
            if not quiet:
                print(f"  same work   torch.compile failed: {str(err)[:200]}")
    tps_j, step_j = end_to_end_jax(cfg, samples, B, steps, dev_jax, preset.steps_per_call)
    label = "jax packed" + (f" ({preset.steps_per_call} steps/call)" if preset.steps_per_call > 1 else "")
    rows.append({"comparison": "end to end", "framework": label, "tokens_per_s": tps_j,
                 "mean_step_ms": step_j * 1000})
    tps_t, step_t = end_to_end_torch(cfg, samples, B, steps, dev_torch)
    rows.append({"comparison": "end to end", "framework": "torch original-style", "tokens_per_s": tps_t,
                 "mean_step_ms": step_t * 1000})
    gen = bench_generation(cfg, dev_jax, dev_torch)
    result = {"device": device_name, "backend": "gpu" if use_gpu else "cpu", "config": config,
              "params": cfg.num_params(), "batch": [B, T], "steps": steps,
              "flops_per_token": flops_tok, "peak_tflops": peak, "rows": rows, "generation": gen,
              "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "torch": torch.__version__}
    eager = next(r for r in rows if r["framework"] == "torch eager")
    jax1 = next(r for r in rows if r["framework"] == "jax jit")
    best_jax = max((r for r in rows if r["framework"].startswith("jax jit")), key=lambda r: r["tokens_per_s"])
    result["ratios"] = {"same_work_jax_over_torch_eager": jax1["tokens_per_s"] / eager["tokens_per_s"],
                        "same_work_best_jax_over_torch_eager": best_jax["tokens_per_s"] / eager["tokens_per_s"],
                        "end_to_end_jax_over_torch_original": tps_j / tps_t,
                        "generation_cached_jax_over_reference": gen["jax_cached"] / gen["torch_reference"]}
    return result


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
    print(f"generation  {res['generation']['new_tokens']}-token answer: jax cached {g['jax_cached']:,.0f} tok/s, torch reference "
          f"{g['torch_reference']:,.0f} tok/s")
    print("ratios (JAX / PyTorch): " + ", ".join(f"{k} {v:.2f}x" for k, v in res["ratios"].items()))
    print(f"process peak RSS {res['process_peak_rss_mb']:.0f} MiB (both frameworks together); "
          f"tokens/s count non-pad tokens; * mean step of the whole timed loop, batching included; "
          f"MFU needs a known peak (--peak-tflops)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guppy_jax.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", choices=sorted(PRESETS), default="guppy-9m", help="model preset to time")
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after warm-up)")
    p.add_argument("--batch-size", type=int, help="default: the preset's")
    p.add_argument("--data-dir", help="prepared data (default: data/generated/guppy, made if missing)")
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--steps-per-call", type=int, nargs="+", default=[1, 4],
                   help="JAX variants: k train steps per jitted call (lax.scan)")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU, if not in the built-in table")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    res = run(args.config, args.device, args.steps, args.batch_size, args.data_dir, not args.no_torch_compile,
              tuple(args.steps_per_call), peak_tflops=args.peak_tflops)
    print_table(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
