"""Generation timing for `python -m guppy_jax.bench`: three decoders side by side, and
batch-1 decoding against the memory floor.

    JAX cached          guppy_jax.generate: one jitted while_loop over a key/value cache
    torch cached        reference_torch's key/value cache, eager, one call per token
    torch original      the original's sampler: the whole sequence again for every token

each at batch 1 (a chat) and at the eval's batch (36 prompts at once), sampling with the
original's temperature 0.7 and top-k 50. At batch 1 a decode step reads every weight once,
so its time cannot go below (weight bytes) / (memory read bandwidth): `read_bandwidth`
measures the bandwidth with a numpy max over an array as large as the weights (a max is
bound by reading; numpy's float32 sum is not: its pairwise adds ran at 24 GB/s where max
read 45 GB/s on the project's CPU), and
`decode_step_s` times decode steps alone (no sampling, no dispatch between steps).
"""
from __future__ import annotations

import itertools
import statistics
import time

import numpy as np

EVAL_BATCH = 36  # the personality eval's prompts, answered in one batch
PROMPT = [1, 300, 201, 400, 2, 201, 1, 283, 201]  # 9 tokens, as a short chat prompt


def median_rate(make, repeats: int) -> float:
    """Median of tokens/s over `repeats` calls of make() -> tokens made."""
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        tokens = make()
        rates.append(tokens / (time.perf_counter() - t))
    return statistics.median(rates)


def read_bandwidth(n_bytes: int, repeats: int = 9) -> float:
    """Bytes per second that one core reads from an array of `n_bytes` (median of repeats)."""
    a = np.ones(max(n_bytes // 4, 1), np.float32)
    a.max()  # touch every page first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a.max()
        times.append(time.perf_counter() - t)
    return a.nbytes / statistics.median(times)


def weight_bytes(params) -> int:
    import jax
    return int(sum(np.asarray(leaf).nbytes for leaf in jax.tree_util.tree_leaves(params)))


def decode_step_s(cfg, params, n: int = 64, repeats: int = 5) -> float:
    """Seconds per batch-1 decode step: n steps inside one jitted fori_loop after a prefill of
    PROMPT, each feeding back its argmax; the median of the whole call less the median of the
    prefill alone, over n."""
    import jax
    import jax.numpy as jnp

    from ..core.generate import init_cache
    from ..core.model import GuppyLM
    model, P = GuppyLM(cfg), len(PROMPT)

    @jax.jit
    def run(params, tokens_1P):
        ones = jnp.ones_like(tokens_1P)
        logits, mut = model.apply({"params": params, "cache": init_cache(cfg, 1)}, tokens_1P,
                                  jnp.arange(P)[None], ones, decode=True, mutable=["cache"])

        def step(i, carry):
            cache, tok = carry
            logits, mut = model.apply({"params": params, "cache": cache}, tok[:, None], jnp.full((1, 1), P + i),
                                      jnp.ones((1, 1), jnp.int32), decode=True, mutable=["cache"])
            return mut["cache"], jnp.argmax(logits[:, 0], -1).astype(jnp.int32)
        return jax.lax.fori_loop(0, n, step, (mut["cache"], jnp.argmax(logits[:, -1], -1).astype(jnp.int32)))[1]

    tokens = jnp.asarray([PROMPT], jnp.int32)
    run(params, tokens).block_until_ready()  # compile
    prefill_only = jax.jit(lambda p, t: model.apply({"params": p}, t))
    prefill_only(params, tokens).block_until_ready()
    whole, prefill = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        run(params, tokens).block_until_ready()
        middle = time.perf_counter()
        prefill_only(params, tokens).block_until_ready()
        whole.append(middle - t)
        prefill.append(time.perf_counter() - middle)
    steps = statistics.median(whole) - statistics.median(prefill)
    # On a small model under load the n steps can vanish in the prefill's noise: then count the
    # prefill as one more step, an upper bound rather than a negative time
    return steps / n if steps > 0 else statistics.median(whole) / (n + 1)


def torch_batch_sampler(model, tokens_BT, new_tokens: int, cached: bool, generator) -> int:
    """Sample `new_tokens` for every row (no stop at eos, so every row does the full work) with
    the original's rule; `cached` uses the reference's key/value cache. Returns tokens made."""
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        cache = [{} for _ in model.blocks] if cached else None
        ids_BT = tokens_BT
        logits_BV = model(ids_BT, cache=cache)[:, -1]
        for i in range(new_tokens):
            scaled_BV = logits_BV / 0.7
            kth_B1 = torch.topk(scaled_BV, 50).values[:, -1:]
            probs_BV = F.softmax(scaled_BV.masked_fill(scaled_BV < kth_B1, float("-inf")), -1)
            next_B1 = torch.multinomial(probs_BV, 1, generator=generator)
            ids_BT = torch.cat([ids_BT, next_B1], dim=1)
            if i < new_tokens - 1:
                window = next_B1 if cached else ids_BT[:, -model.cfg.max_seq_len:]
                logits_BV = model(window, cache=cache)[:, -1]
    return tokens_BT.shape[0] * new_tokens


def bench_generation(cfg, dev_jax, dev_torch, repeats: int = 5, new_tokens: int | None = None) -> dict:
    """Tokens/s of the three decoders at batch 1 and at EVAL_BATCH, and the decode floor."""
    import jax
    import torch

    from ..export.convert_weights import torch_model_from_params
    from ..core.generate import default_answer_len, generate
    from ..core.model import init_params
    n = new_tokens or default_answer_len(cfg)
    with jax.default_device(dev_jax):
        params = init_params(cfg, jax.random.key(0))
    model = torch_model_from_params(jax.device_get(params), cfg).to(dev_torch).eval()
    gen = torch.Generator(device=dev_torch).manual_seed(0)
    res = {"new_tokens": n, "eval_batch": EVAL_BATCH}
    for label, B, reps in (("batch1", 1, repeats), ("batch_eval", EVAL_BATCH, max(1, repeats // 2))):
        prompts = [PROMPT] * B
        keys = itertools.count()
        with jax.default_device(dev_jax):
            def jax_run():
                return sum(map(len, generate(cfg, params, prompts, jax.random.key(next(keys)), max_new_tokens=n)))
            jax_run()  # compile
            res[f"{label}_jax_cached"] = median_rate(jax_run, reps)
        tokens_BT = torch.tensor(prompts, device=dev_torch)
        for name, cached in (("torch_cached", True), ("torch_original", False)):
            res[f"{label}_{name}"] = median_rate(
                lambda: torch_batch_sampler(model, tokens_BT, n, cached, gen), reps)
    with jax.default_device(dev_jax):
        res["decode_step_ms"] = decode_step_s(cfg, params) * 1e3
    res["weight_bytes"] = weight_bytes(params)
    res["read_gb_per_s"] = read_bandwidth(res["weight_bytes"]) / 1e9
    res["floor_ms"] = res["weight_bytes"] / (res["read_gb_per_s"] * 1e9) * 1e3
    return res


def generation_ratios(g: dict) -> dict:
    """The stable names bench's JSON keeps its generation ratios under."""
    return {"generation_jax_over_torch_cached": g["batch1_jax_cached"] / g["batch1_torch_cached"],
            "generation_jax_over_original": g["batch1_jax_cached"] / g["batch1_torch_original"],
            "generation_batch_jax_over_torch_cached": g["batch_eval_jax_cached"] / g["batch_eval_torch_cached"],
            "generation_batch_jax_over_original": g["batch_eval_jax_cached"] / g["batch_eval_torch_original"],
            "decode_over_floor": g["decode_step_ms"] / g["floor_ms"]}
