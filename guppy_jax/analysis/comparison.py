"""Train JAX and the PyTorch reference side by side from the same weights on the same
batches (the library of `python -m guppy_jax.compare`): every loss of both (and of the
NNX model, given nnx=True), each one's time per step, and a plot."""
from __future__ import annotations

import statistics
import time

import numpy as np

from ..core.config import PRESETS
from ..core.paths import DEFAULT_DATA


def run_compare(preset="guppy-9m", steps=100, dropout=False, data_dir=None, seed=0, batch_size=None,
                quiet=False, nnx=False) -> dict:
    """Train both frameworks from the same weights on the same batches; every loss of both.
    With `nnx`, also the NNX model (nnx_model.py, its nnx.jit step) from the same weights;
    with dropout its masks differ from Linen's (nnx.Rngs draws its keys another way)."""
    import jax
    import torch

    from reference_torch.train import make_optimizer, to_torch_batch
    from reference_torch.train import train_step as torch_step

    from ..export.convert_weights import torch_model_from_params
    from ..data.batches import Batches, padded_row_len
    from ..data.datadir import load_samples
    from ..core.model import init_params
    from ..core.steps import create_state, make_train_step

    train_cfg = PRESETS[preset]
    cfg = train_cfg.model if dropout else train_cfg.model.replace(dropout=0.0)
    oc = train_cfg.optim.replace(steps=steps, warmup_steps=min(train_cfg.optim.warmup_steps, steps // 10))
    B = batch_size or train_cfg.batch_size
    samples = load_samples(data_dir or DEFAULT_DATA, cfg.max_seq_len, cfg.vocab_size)
    T = padded_row_len(samples, cfg.max_seq_len)
    batches = Batches(samples, B, T, packed=False, seed=seed)
    fixed = [next(batches) for _ in range(steps)]

    params = init_params(cfg, jax.random.key(seed))
    torch.manual_seed(seed)
    model = torch_model_from_params(jax.device_get(params), cfg)
    opt, sched = make_optimizer(model, oc)
    rng = jax.random.key(seed + 1)
    step = make_train_step(dropout=dropout)
    if nnx:
        from ..core import nnx_model
        nnx_guppy = nnx_model.linen_to_nnx(params, cfg)  # a copy: the Linen step donates its state
        nnx_opt = nnx_model.make_optimizer(nnx_guppy, oc)
        nnx_step = nnx_model.make_train_step(dropout=dropout)
    state = create_state(cfg, oc, params)

    losses = {"jax": [], **({"nnx": []} if nnx else {}), "torch": []}
    times = {name: [] for name in losses}

    def timed(name, run):
        t = time.perf_counter()
        losses[name].append(float(run()))
        times[name].append(time.perf_counter() - t)

    def jax_step():
        nonlocal state
        state, metrics = step(state, batch, rng)
        return metrics["loss"]

    for i, batch in enumerate(fixed):
        timed("jax", jax_step)
        if nnx:
            timed("nnx", lambda: nnx_step(nnx_guppy, nnx_opt, batch, rng)["loss"])
        if not dropout:
            model.eval()  # train_step calls model.train(); with p = 0 the two modes agree anyway
        timed("torch", lambda: torch_step(model, opt, sched, to_torch_batch(batch), oc.grad_clip))
        if not quiet and (i + 1) % max(1, steps // 10) == 0:
            print(f"step {i + 1}/{steps}: " + "  ".join(f"{name} {curve[-1]:.4f}" for name, curve in losses.items())
                  + f"  |jax - torch| {abs(losses['jax'][-1] - losses['torch'][-1]):.2e}", flush=True)
    diff = np.abs(np.array(losses["jax"]) - np.array(losses["torch"]))
    res = {"config": preset, "steps": steps, "dropout": dropout, "batch": [B, T], "seed": seed,
           "jax_losses": losses["jax"], "torch_losses": losses["torch"], "max_abs_diff": float(diff.max()),
           "final_abs_diff": float(diff[-1]), "first_step_abs_diff": float(diff[0]),
           "wall_s": {name: sum(t) for name, t in times.items()},
           "first_step_s": {name: t[0] for name, t in times.items()},
           "median_step_ms": {name: statistics.median(t[1:] or t) * 1e3 for name, t in times.items()},
           "date": time.strftime("%Y-%m-%d"), "jax": jax.__version__, "torch": torch.__version__}
    if nnx:
        nnx_diff = np.abs(np.array(losses["nnx"]) - np.array(losses["jax"]))
        res.update(nnx_losses=losses["nnx"], nnx_max_abs_diff=float(nnx_diff.max()))
    return res


def plot_compare(res: dict, png_path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone
    steps = np.arange(1, res["steps"] + 1)
    fig = Figure(figsize=(7, 5.5), dpi=110)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.plot(steps, res["jax_losses"], color="tab:blue", label="JAX / Flax Linen")
    if "nnx_losses" in res:
        top.plot(steps, res["nnx_losses"], color="tab:green", linestyle=":", label="JAX / Flax NNX")
    top.plot(steps, res["torch_losses"], color="tab:red", linestyle="--", label="PyTorch reference")
    top.set(ylabel="train loss", title=f"Same weights, same batches: {res['config']}, "
                                       f"dropout {'on' if res['dropout'] else 'off'}")
    top.legend()
    top.grid(alpha=0.3)
    diff = np.abs(np.array(res["jax_losses"]) - np.array(res["torch_losses"]))
    bottom.semilogy(steps, np.maximum(diff, 1e-9), color="black", label="|Linen - PyTorch|")
    if "nnx_losses" in res:
        nnx_diff = np.abs(np.array(res["nnx_losses"]) - np.array(res["jax_losses"]))
        bottom.semilogy(steps, np.maximum(nnx_diff, 1e-9), color="tab:green", label="|NNX - Linen|")
        bottom.legend()
    bottom.set(xlabel="step", ylabel="|loss difference|")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(png_path)
