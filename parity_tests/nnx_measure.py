"""The NNX model (guppy_jax/core/nnx_model.py) against the Linen model and the PyTorch reference.

Shared by parity_tests/test_nnx.py and the parity report: every function returns
`measure.Check` rows (a named quantity, its measured difference, its tolerance), from one
set of weights converted to all three, dropout off, in float32.

    python -m parity_tests.nnx_measure --model micro   # the rows, folded per layer as report.py does

Tolerances. NNX against the reference: measure.py's own (forward_tol, its float32 9M
bounds). NNX against Linen:
- forward quantities: 1e-6 (a few float32 ulps); measured 0, the same operations in the
  same order;
- gradients: with Linen's gradient fence (model.norm_input, on by default on the CPU),
  1e-5 of the largest entry, as measure.py asks of torch against flax: the fence makes XLA
  add the residual stream's gradient terms in another order (measured up to 9e-7). With
  the fence off: 0, bit for bit;
- 50 updates: with the fence, measure.py's bounds for torch against flax (Adam's first steps
  turn a gradient's rounding into +-lr); without it, 0. The two NNX steps (nnx.jit and
  split/merge + jax.jit): 0;
- generation: 0 tokens.
Training is compared with dropout off: both draw each step's key as fold_in(rng, step), but
Linen then derives each Dropout's key from its module path and call count, nnx.Rngs from a
count of its draws, so the masks differ (tests/test_nnx_model.py compares the two NNX
steps with dropout on).
"""
from __future__ import annotations

import argparse
import contextlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from guppy_jax.core import model as linen_model
from guppy_jax.core import nnx_model
from guppy_jax.core.config import PARITY_MODELS, OptimConfig
from guppy_jax.export.convert_weights import params_to_state_dict, torch_model_from_params
from guppy_jax.core.generate import generate
from guppy_jax.core.model import GuppyLM as LinenGuppyLM
from guppy_jax.core.model import forward_with_intermediates
from guppy_jax.core.steps import batch_loss, create_state, make_train_step
from parity_tests.measure import (FIFTY_UPDATES, FLOAT32_9M_TOLERANCES, Check, default_lengths, forward_tol,
                                  jax_batch, max_abs, padded_batch, pair, trained_pair)
from reference_torch import model as ref

NNX_VS_LINEN_TOL = 1e-6  # forward quantities: float32 rounding, a few ulps (measured: 0)
NNX_VS_LINEN_GRAD_TOL = 1e-5  # gradients / their largest entry, as measure.py asks of torch vs flax


def nnx_pair(cfg, source: str, seed: int = 0):
    """(torch model, Linen params, NNX model) holding the same weights, initialised by
    `source`: "torch", "flax" (Linen) or "nnx"."""
    if source == "nnx":
        model = nnx_model.GuppyLM(cfg, rngs=nnx.Rngs(seed))
        params = nnx_model.nnx_to_linen(model)
        return torch_model_from_params(jax.device_get(params), cfg), params, model
    torch_model, params = pair(cfg, source, seed)
    return torch_model, params, nnx_model.linen_to_nnx(params, cfg)


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_nnx_conversion(cfg) -> list[Check]:
    """Linen -> NNX -> Linen is bit-identical, and nnx.split's state lines up with Linen's
    params leaf for leaf (same paths, shapes and values)."""
    _, params, model = nnx_pair(cfg, "flax")
    before, after = _flat(params), _flat(nnx_model.nnx_to_linen(model))
    differ = len(before.keys() ^ after.keys()) + sum(
        not np.array_equal(np.asarray(before[k]), np.asarray(after[k])) for k in before.keys() & after.keys())
    _, state = nnx.split(model)
    state_leaves, param_leaves = jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(params)
    unmatched = abs(len(state_leaves) - len(param_leaves)) + sum(
        a.shape != b.shape or not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(state_leaves, param_leaves))
    return [Check("[nnx] Linen -> NNX -> Linen round trip", differ, 0, "leaves not bit-identical"),
              Check("[nnx] nnx.split state vs Linen params, leaf by leaf", unmatched, 0, "leaves that differ")]


def check_nnx_forward(cfg, source: str) -> list[Check]:
    """Every layer's attention probs, attention output and block output, the logits and the
    loss: NNX against Linen and against the reference."""
    torch_model, params, model = nnx_pair(cfg, source)
    batch = padded_batch(cfg, default_lengths(cfg))
    tokens = jnp.asarray(batch["inputs"], jnp.int32)
    logits_n, inter_n = nnx_model.forward_with_intermediates(model, tokens)
    logits_l, inter_l = forward_with_intermediates(cfg, params, tokens)
    with torch.no_grad():
        logits_t, inter_t = torch_model(torch.from_numpy(batch["inputs"]), return_intermediates=True)
    inter_l["logits"], inter_n["logits"], inter_t["logits"] = logits_l, logits_n, logits_t
    label, tol = f"[{source} init]", forward_tol(cfg)
    checks = []
    for name in inter_t:
        checks.append(Check(f"{label} nnx vs linen: {name}", max_abs(inter_n[name], inter_l[name]), NNX_VS_LINEN_TOL))
        checks.append(Check(f"{label} nnx vs torch: {name}", max_abs(inter_n[name], inter_t[name].numpy()), tol))
    jb = jax_batch(batch)
    loss_n = float(nnx_model.batch_loss(model, jb))
    loss_l = float(batch_loss(LinenGuppyLM(cfg).apply, params, jb))
    with torch.no_grad():
        loss_t = float(ref.lm_loss(logits_t, torch.from_numpy(batch["targets"]).long(),
                                   torch.from_numpy(batch["loss_mask"])))
    checks.append(Check(f"{label} nnx vs linen: loss", abs(loss_n - loss_l) / abs(loss_l), 1e-6, "relative diff"))
    checks.append(Check(f"{label} nnx vs torch: loss", abs(loss_n - loss_t) / abs(loss_t), 1e-6, "relative diff"))
    return checks


@contextlib.contextmanager
def linen_gradient_fence(on: bool):
    """Linen's gradient fence (model.norm_input) on or off while the block runs; it is read
    when a function is traced. Yields whether the setting exists in this version of model.py."""
    if not hasattr(linen_model, "gradient_fence"):
        yield False
        return
    with linen_model.gradient_fence(on):
        yield True


def check_nnx_grads(cfg, source: str, fence: bool = True) -> list[Check]:
    """The gradient of every parameter, NNX (nnx.grad) against Linen (jax.grad). With Linen's
    gradient fence (its default on the CPU) they agree to float32 rounding: the fence makes
    XLA add the residual stream's gradient terms in another order. Without it, exactly."""
    _, params, model = nnx_pair(cfg, source)
    jb = jax_batch(padded_batch(cfg, default_lengths(cfg)))
    with linen_gradient_fence(fence) as settable:
        if not (fence or settable):
            return []
        grads_l = jax.grad(lambda p: batch_loss(LinenGuppyLM(cfg).apply, p, jb))(params)
    grads_n = nnx.grad(lambda m: nnx_model.batch_loss(m, jb))(model)
    sd_l = params_to_state_dict(jax.device_get(grads_l), cfg)
    sd_n = params_to_state_dict(jax.device_get(nnx_model.nnx_to_linen(grads_n)), cfg)
    label = f"[{source} init{'' if fence else ', linen fence off'}] nnx vs linen"
    checks = []
    for name, g_l in sd_l.items():
        if name == "lm_head.weight":  # the tied embedding, already compared as tok_emb.weight
            continue
        scale = float(np.max(np.abs(g_l))) or 1.0
        checks.append(Check(f"{label}: grad {name}", max_abs(sd_n[name], g_l) / scale,
                            NNX_VS_LINEN_GRAD_TOL if fence else 0.0, "max |diff| / max |grad|"))
    return checks


def check_nnx_training(cfg, n_steps: int = 50, oc: OptimConfig = FIFTY_UPDATES, source: str = "torch",
                       fence: bool = True, against_torch: bool = True,
                       n_batches: int = 4) -> tuple[list[Check], dict]:
    """n_steps updates on the same fixed batches (cycled), dropout off: the NNX step under
    nnx.jit against Linen's steps.make_train_step, and (with the fence on, Linen's default)
    against the same step under split/merge + jax.jit and, if asked, the reference's own
    updates (2.6 s a step at 9M on 2 cores). Returns the rows and the loss curves."""
    from reference_torch import train as ref_train
    cfg = cfg.replace(dropout=0.0)
    torch_model, params, model = nnx_pair(cfg, source)
    batches = [jax_batch(padded_batch(cfg, default_lengths(cfg), seed=i)) for i in range(n_batches)]
    with linen_gradient_fence(fence) as settable:
        if not (fence or settable):
            return [], {}
        # traced at its first call below, inside this block: with this fence setting
        state, linen_step = create_state(cfg, oc, params), make_train_step(dropout=False, donate=False)
        rng = jax.random.key(0)
        optimizer, nnx_step = nnx_model.make_optimizer(model, oc), nnx_model.make_train_step(dropout=False)
        losses: dict = {"linen": [], "nnx": []}
        if fence:
            split_model = nnx_model.linen_to_nnx(params, cfg)
            split_optimizer = nnx_model.make_optimizer(split_model, oc)
            split_step, split_state = nnx_model.make_split_train_step(split_model, split_optimizer, dropout=False)
            losses["split"] = []
        against_torch = against_torch and fence
        if against_torch:
            opt_t, sched_t = ref_train.make_optimizer(torch_model, oc)
            losses["torch"] = []
        for i in range(n_steps):
            batch = batches[i % n_batches]
            state, metrics = linen_step(state, batch, rng)
            losses["linen"].append(float(metrics["loss"]))
            losses["nnx"].append(float(nnx_step(model, optimizer, batch, rng)["loss"]))
            if fence:
                split_state, metrics = split_step(split_state, batch, rng)
                losses["split"].append(float(metrics["loss"]))
            if against_torch:
                np_batch = {k: np.asarray(v) for k, v in batch.items()}
                losses["torch"].append(ref_train.train_step(torch_model, opt_t, sched_t,
                                                            ref_train.to_torch_batch(np_batch), oc.grad_clip))
    nnx_params = nnx_model.nnx_to_linen(model)
    big = cfg.d_model * cfg.n_layers > 1024
    param_tol = FLOAT32_9M_TOLERANCES["params after 50"] if big else 1e-4
    curve_tol = FLOAT32_9M_TOLERANCES["loss curve"] if big else 1e-4
    label = f"[{source} init{'' if fence else ', linen fence off'}] after {n_steps} updates"
    checks = [Check(f"{label}: nnx vs linen params", max_abs_tree(nnx_params, state.params),
                    param_tol if fence else 0.0),
              Check(f"{label}: nnx vs linen loss curve", max_abs(losses["nnx"], losses["linen"]),
                    curve_tol if fence else 0.0)]
    if fence:
        nnx.update((split_model, split_optimizer), split_state)
        checks += [
            Check(f"{label}: nnx split/merge + jax.jit vs nnx.jit params",
                  max_abs_tree(nnx_model.nnx_to_linen(split_model), nnx_params), 0.0),
            Check(f"{label}: nnx split/merge + jax.jit vs nnx.jit loss curve",
                  max_abs(losses["split"], losses["nnx"]), 0.0)]
    if against_torch:
        sd_n = params_to_state_dict(jax.device_get(nnx_params), cfg)
        params_vs_torch = max(max_abs(sd_n[k], v.detach().numpy()) for k, v in torch_model.state_dict().items())
        checks += [Check(f"{label}: nnx vs torch params", params_vs_torch, param_tol),
                   Check(f"{label}: nnx vs torch loss curve", max_abs(losses["nnx"], losses["torch"]), curve_tol)]
    return checks, losses


def max_abs_tree(a, b) -> float:
    fa, fb = _flat(a), _flat(b)
    if fa.keys() != fb.keys():
        return float("inf")
    return max(max_abs(fa[k], fb[k]) for k in fa)


def check_nnx_generation(cfg, n_new: int = 32) -> list[Check]:
    """32 new tokens from several prompts, greedy and sampled (temperature 0.7, top-k 50, the
    same key): NNX's cached loop against Linen's generate.generate; greedy against the
    reference's uncached sampler too."""
    n_new = min(n_new, cfg.max_seq_len // 2)
    cfg, torch_model, params, cycle = trained_pair(cfg)
    model = nnx_model.linen_to_nnx(params, cfg)
    rs = np.random.RandomState(2)
    prompts = [[int(t) for t in rs.choice(cycle, n)] for n in (3, 7, 12, cfg.max_seq_len - n_new)]
    prompt_len = cfg.max_seq_len - n_new
    greedy_n = nnx_model.generate(model, prompts, max_new_tokens=n_new, temperature=0.0, prompt_len=prompt_len)
    greedy_l = generate(cfg, params, prompts, max_new_tokens=n_new, temperature=0.0, prompt_len=prompt_len)
    greedy_t = [ref.generate(torch_model, p, n_new, temperature=0.0, eos_id=cfg.eos_id) for p in prompts]
    rng = jax.random.key(7)
    sampled_n = nnx_model.generate(model, prompts, rng, max_new_tokens=n_new, prompt_len=prompt_len)
    sampled_l = generate(cfg, params, prompts, rng, max_new_tokens=n_new, prompt_len=prompt_len)

    def differ(xs, ys):
        return sum(sum(a != b for a, b in zip(x, y)) + abs(len(x) - len(y)) for x, y in zip(xs, ys))

    what = f"{n_new} tokens x {len(prompts)} prompts"
    return [Check(f"greedy {what}: nnx cached vs linen cached", differ(greedy_n, greedy_l), 0, "tokens that differ"),
            Check(f"greedy {what}: nnx cached vs torch", differ(greedy_n, greedy_t), 0, "tokens that differ"),
            Check(f"sampled {what}: nnx cached vs linen cached", differ(sampled_n, sampled_l), 0,
                  "tokens that differ")]


def collect_nnx(cfg) -> list[Check]:
    """Every NNX row, in the order the report prints them."""
    checks = check_nnx_conversion(cfg)
    for source in ("torch", "flax", "nnx"):
        checks += check_nnx_forward(cfg, source)
    for source in ("torch", "nnx"):
        checks += check_nnx_grads(cfg, source) + check_nnx_grads(cfg, source, fence=False)
    checks += check_nnx_training(cfg)[0] + check_nnx_training(cfg, fence=False)[0]
    checks += check_nnx_generation(cfg)
    return checks


def main(argv=None) -> int:
    from parity_tests.measure import parity_precision
    from parity_tests.report import print_table
    parser = argparse.ArgumentParser(description="NNX parity rows: NNX vs Linen vs the PyTorch reference")
    parser.add_argument("--model", choices=sorted(PARITY_MODELS), default="micro")
    args = parser.parse_args(argv)
    with parity_precision():
        checks = collect_nnx(PARITY_MODELS[args.model])
    return print_table(checks, args.model)


if __name__ == "__main__":
    sys.exit(main())
