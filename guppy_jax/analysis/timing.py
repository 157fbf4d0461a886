"""The measurements behind `python -m guppy_jax.bench` (its docstring says what each one
compares): `bench_frameworks` times the same-work and end-to-end train steps of both
frameworks, generation (analysis/decode.py) and Linen against NNX (analysis/apis.py),
`bench_device_scaling` the JAX step on a
growing data mesh (analysis/devices.py). Medians over the timed steps after warm-up; the
first call, compilation included, is reported apart. Needs the `torch` extra.
"""
from __future__ import annotations

import platform
import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..core.paths import DEFAULT_DATA
from .decode import bench_generation, generation_ratios
from ..core.config import PRESETS, OptimConfig

# Dense peak FLOP/s by device name and compute dtype, where known (vendor datasheets).
PEAK_TFLOPS = {"H100": {"float32": 67.0, "tf32": 495.0, "bfloat16": 989.0},
               "H200": {"float32": 67.0, "tf32": 495.0, "bfloat16": 989.0},
               "A100": {"float32": 19.5, "tf32": 156.0, "bfloat16": 312.0},
               "T4": {"float32": 8.1, "float16": 65.0}}


def flops_per_token(cfg, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul params, the tied head included) + attention."""
    matmul_params = cfg.num_params() - cfg.max_seq_len * cfg.d_model  # position table is a lookup
    return 6 * matmul_params + 12 * cfg.n_layers * seq_len * cfg.d_model


@dataclass
class Devices:
    jax: object      # a jax.Device
    torch: object    # a torch.device
    gpu: bool
    name: str


def pick_devices(device: str) -> Devices:
    import jax
    import torch
    has_gpu = device != "cpu" and any(d.platform == "gpu" for d in jax.devices())
    if device == "gpu" and not has_gpu:
        raise ValueError("--device gpu but JAX sees no GPU")
    gpu = device == "gpu" or (device == "auto" and has_gpu)
    dev_jax = jax.devices("gpu")[0] if gpu else jax.devices("cpu")[0]
    dev_torch = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    name = dev_jax.device_kind if gpu else (platform.processor() or platform.machine())
    return Devices(dev_jax, dev_torch, gpu, name)


# ----------------------------------------------------------------------------- training, same work
def bench_jax_steps(cfg, batches, n, steps_per_call=1, device=None, dtype="float32", mesh=None):
    """(compile+first call s, median s per step, peak bytes or None) for the jitted train step,
    computing in `dtype` (float16 with its loss scale), on `device` or, given a `mesh`, with
    the state and batches placed on it as train does."""
    import jax

    from ..data.batches import stack_batches
    from ..training.mesh import place_batch, place_state
    from ..core.model import init_params
    from ..core.precision import compute_dtype, needs_loss_scaling
    from ..core.steps import LossScale, create_state, make_train_step
    rng = jax.random.key(1)
    k = steps_per_call
    if k == 1:
        calls = [batches[i % len(batches)] for i in range(n + 1)]
    else:  # >= 3 timed calls
        calls = [stack_batches([batches[(g * k + j) % len(batches)] for j in range(k)])
                 for g in range(max(3, n // k) + 1)]
    with jax.default_device(device):
        scale = LossScale.create() if needs_loss_scaling(dtype) else None
        state = create_state(cfg, OptimConfig(), init_params(cfg, jax.random.key(0)), compute_dtype(dtype), scale)
        fn = make_train_step(k)
        if mesh is None:
            calls = [jax.device_put(c, device) for c in calls]
        else:
            state = place_state(state, mesh)
            calls = [place_batch(c, mesh, stacked=k > 1) for c in calls]
        t = time.perf_counter()
        state, m = fn(state, calls[0], rng)
        jax.block_until_ready(m)
        first = time.perf_counter() - t
        times = []
        for c in calls[1:]:
            t = time.perf_counter()
            state, m = fn(state, c, rng)
            jax.block_until_ready(m)
            times.append((time.perf_counter() - t) / k)
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use") if hasattr(device, "memory_stats") else None
    return first, statistics.median(times), peak


def torch_trainer(cfg, dev, compile_model=False, dynamic=False):
    """(model to call, optimizer, scheduler) of the reference, seeded, on `dev`; `dynamic`
    compiles for batches of any width (the original's per-batch padding)."""
    import torch

    from reference_torch.model import GuppyLM
    from reference_torch.train import make_optimizer
    torch.manual_seed(0)
    model = GuppyLM(cfg).to(dev)
    opt, sched = make_optimizer(model, OptimConfig())
    return (torch.compile(model, dynamic=dynamic) if compile_model else model), opt, sched


def torch_step_fn(opt, sched, dev, amp_dtype: str | None):
    """The reference's float32 step, or the original's autocast step in float16 (with a
    GradScaler) or bfloat16."""
    import torch

    from reference_torch.train import train_step, train_step_amp
    if amp_dtype is None:
        return lambda model, batch: train_step(model, opt, sched, batch)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == "float16")
    dtype = getattr(torch, amp_dtype)
    return lambda model, batch: train_step_amp(model, opt, sched, scaler, batch, device_type=dev.type, dtype=dtype)


def bench_torch_steps(cfg, batches, n, dev, compile_model=False, amp_dtype=None):
    import torch

    from reference_torch.train import to_torch_batch
    runner, opt, sched = torch_trainer(cfg, dev, compile_model)
    step = torch_step_fn(opt, sched, dev, amp_dtype)
    tb = [{k: v.to(dev) for k, v in to_torch_batch(b).items()} for b in batches]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    step(runner, tb[0])
    first = time.perf_counter() - t
    times = []
    for i in range(n):
        t = time.perf_counter()
        step(runner, tb[(i + 1) % len(tb)])  # .item() inside: synchronous
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else None
    return first, statistics.median(times), peak


# ----------------------------------------------------------------------------- training, end to end
def original_style_batches(samples, batch_size, n, pad_id=0):
    """The original's batches: consecutive samples, each batch padded to its own longest."""
    from ..data.batches import shifted_batch
    out = []
    for i in range(n):
        rows = [samples[(i * batch_size + j) % len(samples)] for j in range(batch_size)]
        out.append(shifted_batch(rows, max(len(r) for r in rows), pad_id))
    return out


def end_to_end_jax(cfg, samples, batch_size, n, device, steps_per_call=1):
    """The train loop's pipeline: packed rows, batch building included, metrics a call late,
    `steps_per_call` steps per jitted call as the preset sets it."""
    import jax

    from ..data.batches import Batches, stack_batches
    from ..core.model import init_params
    from ..core.steps import create_state, make_train_step
    rng = jax.random.key(1)
    k = steps_per_call
    it = Batches(samples, batch_size, cfg.max_seq_len, packed=True, seed=0)

    def next_call():
        chunk = [next(it) for _ in range(k)]
        return chunk[0] if k == 1 else stack_batches(chunk)
    with jax.default_device(device):
        state = create_state(cfg, OptimConfig(), init_params(cfg, jax.random.key(0)))
        fn = make_train_step(k)
        state, m = fn(state, next_call(), rng)  # compile outside the clock
        jax.block_until_ready(m)
        tokens, pending, calls = 0, None, max(1, n // k)
        t = time.perf_counter()
        for _ in range(calls):
            batch = next_call()
            tokens += int((batch["segment_ids"] > 0).sum())
            state, m = fn(state, batch, rng)
            if pending is not None:
                jax.device_get(pending["loss"])
            pending = m
        jax.device_get(pending["loss"])
        elapsed = time.perf_counter() - t
    return tokens / elapsed, elapsed / (calls * k)


def end_to_end_torch(cfg, samples, batch_size, n, dev, compile_model=False):
    """The original's loop: batches padded to their own longest row, one eager step each
    (or torch.compile with dynamic shapes, warmed on two widths so that it compiles once)."""
    from reference_torch.train import to_torch_batch, train_step
    model, opt, sched = torch_trainer(cfg, dev, compile_model, dynamic=True)
    for warm in original_style_batches(samples, batch_size, 2 if compile_model else 1):
        train_step(model, opt, sched, {k: v.to(dev) for k, v in to_torch_batch(warm).items()})
    tokens = 0
    t = time.perf_counter()
    for b in original_style_batches(samples[batch_size:], batch_size, n):
        tokens += int((b["inputs"] != 0).sum())
        train_step(model, opt, sched, {k: v.to(dev) for k, v in to_torch_batch(b).items()})
    elapsed = time.perf_counter() - t
    return tokens / elapsed, elapsed / n


# ----------------------------------------------------------------------------- the whole run
def device_peak(name: str, dtype: str):
    for key, table in PEAK_TFLOPS.items():
        if key in name:
            return table.get(dtype)
    return None


class Rows:
    """The result rows, printed as they come unless quiet."""

    def __init__(self, peak_tflops, flops_tok, quiet):
        self.rows, self.peak, self.flops_tok, self.quiet = [], peak_tflops, flops_tok, quiet

    def add(self, comparison, framework, first_s, step_s, tokens_per_step, peak_mem=None):
        tps = tokens_per_step / step_s
        mfu = (tps * self.flops_tok / (self.peak * 1e12)) if self.peak else None
        self.rows.append({"comparison": comparison, "framework": framework, "first_call_s": first_s,
                          "median_step_ms": step_s * 1000, "tokens_per_s": tps, "peak_mem_bytes": peak_mem,
                          "mfu": mfu, "note": ""})
        if not self.quiet:
            print(f"  {comparison:<11} {framework:<26} {step_s * 1000:8.1f} ms/step {tps:10,.0f} tok/s"
                  + (f"  (first call {first_s:.1f}s)" if first_s is not None else ""), flush=True)

    def failed(self, comparison, framework, err):
        self.rows.append({"comparison": comparison, "framework": framework, "error": str(err)[:300]})
        if not self.quiet:
            print(f"  {comparison:<11} {framework} failed: {str(err)[:200]}")

    def find(self, framework):
        return next(r for r in self.rows if r["framework"] == framework)


def time_same_work(cfg, same, steps, steps_per_call, torch_compile, devs, rows: Rows, dtype="float32"):
    """JAX in `dtype` (k steps per call for each k), the reference in float32 eager, with the
    original's autocast when `dtype` is a half type, and torch.compile."""
    real_tokens = float(np.mean([(b["segment_ids"] > 0).sum() for b in same]))
    for k in steps_per_call:
        f, s, pm = bench_jax_steps(cfg, same, steps, k, devs.jax, dtype)
        rows.add("same work", "jax jit" + (f" ({k} steps/call)" if k > 1 else ""), f, s, real_tokens, pm)
    f, s, pm = bench_torch_steps(cfg, same, steps, devs.torch)
    rows.add("same work", "torch eager", f, s, real_tokens, pm)
    if dtype != "float32":
        f, s, pm = bench_torch_steps(cfg, same, steps, devs.torch, amp_dtype=dtype)
        rows.add("same work", f"torch AMP ({dtype})", f, s, real_tokens, pm)
    if torch_compile:
        try:
            f, s, pm = bench_torch_steps(cfg, same, steps, devs.torch, compile_model=True)
            rows.add("same work", "torch.compile", f, s, real_tokens, pm)
        except Exception as err:  # inductor needs a working compiler toolchain
            rows.failed("same work", "torch.compile", err)


def time_end_to_end(cfg, samples, B, steps, k, devs, rows: Rows, torch_compile=True) -> float:
    """Adds the end-to-end rows; returns JAX's tokens/s over the reference's eager loop."""
    tps_j, step_j = end_to_end_jax(cfg, samples, B, steps, devs.jax, k)
    rows.rows.append({"comparison": "end to end", "framework": "jax packed" + (f" ({k} steps/call)" if k > 1 else ""),
                      "tokens_per_s": tps_j, "mean_step_ms": step_j * 1000})
    tps_t, step_t = end_to_end_torch(cfg, samples, B, steps, devs.torch)
    rows.rows.append({"comparison": "end to end", "framework": "torch original-style", "tokens_per_s": tps_t,
                      "mean_step_ms": step_t * 1000})
    if torch_compile:
        try:
            tps_c, step_c = end_to_end_torch(cfg, samples, B, steps, devs.torch, compile_model=True)
            rows.rows.append({"comparison": "end to end", "framework": "torch.compile original-style",
                              "tokens_per_s": tps_c, "mean_step_ms": step_c * 1000})
        except Exception as err:  # inductor needs a working compiler toolchain
            rows.failed("end to end", "torch.compile original-style", err)
    return tps_j / tps_t


def bench_frameworks(preset="guppy-9m", device="auto", steps=20, batch_size=None, data_dir=None, torch_compile=True,
        steps_per_call=(1, 4), quiet=False, peak_tflops=None, dtype="auto", apis=True):
    """Every comparison on one preset's model (dropout off); returns the result dict. With
    `apis`, also Linen against NNX (analysis/apis.py, float32) under "apis", its ratios
    among the others."""
    import jax
    import torch

    from ..data.batches import make_batch, padded_row_len
    from ..data.datadir import load_samples
    from ..core.precision import resolve
    train_cfg = PRESETS[preset]
    cfg = train_cfg.model.replace(dropout=0.0)  # timing only: dropout off in both
    B = batch_size or train_cfg.batch_size
    devs = pick_devices(device)
    dtype = resolve(dtype, devs.jax)[0]
    samples = load_samples(data_dir or DEFAULT_DATA, cfg.max_seq_len, cfg.vocab_size)
    T = padded_row_len(samples, cfg.max_seq_len)
    rs = np.random.default_rng(0)
    same = [make_batch([[samples[i]] for i in rs.choice(len(samples), B, replace=False)], T)
            for _ in range(8)]
    peak = peak_tflops or (device_peak(devs.name, dtype) if devs.gpu else None)
    rows = Rows(peak, flops_per_token(cfg, T), quiet)
    if not quiet:
        print(f"device: {devs.name} ({'gpu' if devs.gpu else 'cpu'}), preset {preset} "
              f"({cfg.num_params():,} params), batch {B} x {T}, JAX in {dtype}, {steps} timed steps")
    time_same_work(cfg, same, steps, steps_per_call, torch_compile, devs, rows, dtype)
    end_to_end = time_end_to_end(cfg, samples, B, steps, train_cfg.steps_per_call, devs, rows, torch_compile)
    gen = bench_generation(cfg, devs.jax, devs.torch)
    api_res = None
    if apis:
        from .apis import bench_apis
        api_res = bench_apis(cfg, same[0], steps, devs.jax)
    eager, jax1 = rows.find("torch eager"), rows.find("jax jit")
    best_jax = max((r for r in rows.rows if r["framework"].startswith("jax jit")), key=lambda r: r["tokens_per_s"])
    ratios = {"same_work_jax_over_torch_eager": jax1["tokens_per_s"] / eager["tokens_per_s"],
              "same_work_best_jax_over_torch_eager": best_jax["tokens_per_s"] / eager["tokens_per_s"],
              "end_to_end_jax_over_torch_original": end_to_end, **generation_ratios(gen),
              **(api_res["ratios"] if api_res else {})}
    compiled = [r for r in rows.rows if r["framework"] == "torch.compile original-style" and "error" not in r]
    if compiled:
        jax_e2e = next(r for r in rows.rows if r["framework"].startswith("jax packed"))
        ratios["end_to_end_jax_over_torch_compile"] = jax_e2e["tokens_per_s"] / compiled[0]["tokens_per_s"]
    if dtype != "float32":
        ratios["same_work_best_jax_over_torch_amp"] = (best_jax["tokens_per_s"]
                                                       / rows.find(f"torch AMP ({dtype})")["tokens_per_s"])
    return {"device": devs.name, "backend": "gpu" if devs.gpu else "cpu", "config": preset, "dtype": dtype,
            "params": cfg.num_params(), "batch": [B, T], "steps": steps,
            "flops_per_token": rows.flops_tok, "peak_tflops": peak, "rows": rows.rows, "generation": gen,
            "apis": api_res,
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "torch": torch.__version__,
            "ratios": ratios}


def bench_device_scaling(preset, n_max, steps, batch_size, data_dir, quiet) -> dict:
    """The --devices mode on the preset's model (float32, dropout off): bench_jax_steps on a
    data mesh of 1, 2, 4 ... n_max devices (guppy_jax/bench_devices.py)."""
    import jax

    from .devices import check_devices, device_counts, scaling_rows
    from ..data.batches import make_batch, padded_row_len
    from ..data.datadir import load_samples
    from ..training.mesh import make_mesh
    train_cfg = PRESETS[preset]
    cfg = train_cfg.model.replace(dropout=0.0)
    B = batch_size or train_cfg.batch_size
    check_devices(n_max, B)
    samples = load_samples(data_dir or DEFAULT_DATA, cfg.max_seq_len, cfg.vocab_size)
    T = padded_row_len(samples, cfg.max_seq_len)
    rs = np.random.default_rng(0)
    batches = [make_batch([[samples[i]] for i in rs.choice(len(samples), B, replace=False)], T) for _ in range(4)]
    if not quiet:
        print(f"{preset}: batch {B} x {T} split over 1 ... {n_max} {jax.devices()[0].platform} devices")
    step_s = {}
    for n in device_counts(n_max):
        mesh = make_mesh({"data": n, "fsdp": 1}, jax.devices()[:n])
        step_s[n] = bench_jax_steps(cfg, batches, steps, mesh=mesh)[1]
    rows = scaling_rows(step_s)
    if not quiet:
        for r in rows:
            print(f"  {r['devices']} device(s): {r['step_ms']:8.1f} ms/step  speed-up {r['speedup']:.2f}x  "
                  f"efficiency {r['efficiency']:.0%}")
    return {"mode": "devices", "config": preset, "batch": [B, T], "platform": jax.devices()[0].platform,
            "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "scaling": rows}
