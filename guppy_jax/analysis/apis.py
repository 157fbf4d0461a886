"""Linen against NNX on one model, for `python -m guppy_jax.bench`: the same train step and
the same batch-1 decode step, each written three ways, from one set of weights.

    linen jax.jit         model.py and steps.py as `train` runs them: the state is a pytree
                          (params, optimizer state) passed in and returned, donated
                          (where steps.DONATION_IS_SAFE, as everywhere below)
    nnx nnx.jit           nnx_model.py the way Flax's guides write it: objects passed to an
                          nnx.jit function that updates them in place
    nnx split/merge       the same objects split once into (graphdef, state); a jax.jit
                          function merges them inside the trace and returns the new state,
                          donated (the answer given in google/flax#4045)

For each: the median seconds per call (all variants' calls interleaved, so that a change in
the machine's load falls on all of them), the first call (trace + compile + run), and the
compiled program's temporary memory from `compiled.memory_analysis()` where the backend
reports it (the question of google/flax#5116). One more train row, where it differs:
Linen with model.py's gradient fence off (it is on for XLA:CPU only), the same computation
as the NNX model, so that the API's cost is apart from model.py's own speed-ups. The decode
rows differ in one more way: model.py keeps its cache as (B*H, S, K), nnx_model.py as the
reference's (B, H, S, K).
"""
from __future__ import annotations

import statistics
import time
from functools import partial

from .decode import PROMPT


def temp_bytes(fn, *args):
    """The temporary memory XLA planned for fn(*args) (jitted; compiled again here), or None
    where the backend or this Flax version's nnx.jit does not say."""
    if not hasattr(fn, "lower"):  # flax 0.10's nnx.jit is a plain function
        return None
    analysis = fn.lower(*args).compile().memory_analysis()
    return getattr(analysis, "temp_size_in_bytes", None) if analysis is not None else None


def time_interleaved(calls: dict, n: int) -> dict:
    """{name: (first-call seconds, median seconds)}: each call() once, then n rounds of all."""
    import jax
    first, times = {}, {name: [] for name in calls}
    for name, call in calls.items():
        t = time.perf_counter()
        jax.block_until_ready(call())
        first[name] = time.perf_counter() - t
    for _ in range(n):
        for name, call in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t)
    return {name: (first[name], statistics.median(times[name])) for name in calls}


# ----------------------------------------------------------------------------- the train step
def train_variants(cfg, params, batch, rng) -> dict:
    """{name: (call() -> metrics, memory() -> temp bytes or None)}: one train step on `batch`
    per call, each variant holding its own copy of `params`."""
    import jax
    import jax.numpy as jnp

    from ..core import model as linen_model
    from ..core import nnx_model
    from ..core.config import OptimConfig
    from ..core.steps import create_state, make_train_step
    oc = OptimConfig()
    copy = partial(jax.tree.map, jnp.copy)
    variants = {}

    def linen(fence: bool):
        fn = make_train_step(1, dropout=False)  # traced at its first call, with the fence as set here
        holder = {"state": create_state(cfg, oc, copy(params))}

        def call():
            with linen_model.gradient_fence(fence):
                holder["state"], metrics = fn(holder["state"], batch, rng)
            return metrics

        def memory():
            with linen_model.gradient_fence(fence):
                return temp_bytes(fn, holder["state"], batch, rng)
        return call, memory

    variants["linen jax.jit"] = linen(linen_model.GRADIENT_FENCE)
    if linen_model.GRADIENT_FENCE and jax.default_backend() == "cpu":
        variants["linen jax.jit, no fence"] = linen(False)

    model = nnx_model.linen_to_nnx(copy(params), cfg)
    optimizer = nnx_model.make_optimizer(model, oc)
    nnx_step = nnx_model.make_train_step(dropout=False)
    variants["nnx nnx.jit"] = (lambda: nnx_step(model, optimizer, batch, rng),
                               lambda: temp_bytes(nnx_step, model, optimizer, batch, rng))

    split_model = nnx_model.linen_to_nnx(copy(params), cfg)
    split_step, state = nnx_model.make_split_train_step(split_model, nnx_model.make_optimizer(split_model, oc),
                                                        dropout=False)
    holder = {"state": state}

    def split_call():
        holder["state"], metrics = split_step(holder["state"], batch, rng)
        return metrics
    variants["nnx split/merge"] = (split_call, lambda: temp_bytes(split_step, holder["state"], batch, rng))
    return variants


# ----------------------------------------------------------------------------- the decode step
def decode_variants(cfg, params) -> dict:
    """{name: (call() -> logits, memory() -> temp bytes or None)}: after a prefill of PROMPT,
    each call decodes one token at batch 1 (the same token, at the next position). Past a
    full cache (more calls than max_seq_len - len(PROMPT)) the positions start again after
    PROMPT and the caches write into their last slot: the same work per call."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ..core import nnx_model
    from ..core.generate import init_cache
    from ..core.steps import DONATION_IS_SAFE
    from ..core.model import GuppyLM
    P = len(PROMPT)
    prompt_1P, positions_1P, ones_1P = (jnp.asarray([PROMPT], jnp.int32), jnp.arange(P, dtype=jnp.int32)[None],
                                        jnp.ones((1, P), jnp.int32))
    tok_11, one_11 = jnp.asarray([[PROMPT[-1]]], jnp.int32), jnp.ones((1, 1), jnp.int32)

    def slots():  # the next position for each variant, wrapping at the end of the position table
        i = 0
        while True:
            yield jnp.full((1, 1), P + i % (cfg.max_seq_len - P), jnp.int32)
            i += 1

    linen = GuppyLM(cfg)

    @partial(jax.jit, donate_argnums=1 if DONATION_IS_SAFE else ())
    def linen_decode(params, cache, tokens_BT, positions_BT, segment_ids_BT):
        logits, mutated = linen.apply({"params": params, "cache": cache}, tokens_BT, positions_BT, segment_ids_BT,
                                      decode=True, mutable=["cache"])
        return logits, mutated["cache"]
    _, cache = linen_decode(params, init_cache(cfg, 1), prompt_1P, positions_1P, ones_1P)
    linen_holder, linen_slots = {"cache": cache}, slots()

    def linen_call():
        logits, linen_holder["cache"] = linen_decode(params, linen_holder["cache"], tok_11, next(linen_slots), one_11)
        return logits

    model = nnx_model.linen_to_nnx(params, cfg)
    model.init_cache(1)
    nnx_model.decode_step(model, prompt_1P, positions_1P, ones_1P)
    nnx_slots = slots()

    split_model = nnx_model.linen_to_nnx(params, cfg)
    split_model.init_cache(1)
    graphdef, state = nnx.split(split_model)

    @partial(jax.jit, donate_argnums=0 if DONATION_IS_SAFE else ())
    def split_decode(state, tokens_BT, positions_BT, segment_ids_BT):
        model = nnx.merge(graphdef, state)
        logits = model(tokens_BT, positions_BT, segment_ids_BT, decode=True)
        return logits, nnx.state(model)
    _, state = split_decode(state, prompt_1P, positions_1P, ones_1P)
    split_holder, split_slots = {"state": state}, slots()

    def split_call():
        logits, split_holder["state"] = split_decode(split_holder["state"], tok_11, next(split_slots), one_11)
        return logits
    slot_11 = positions_1P[:, :1]  # any position: memory_analysis needs only the shapes
    return {"linen jax.jit": (linen_call,
                              lambda: temp_bytes(linen_decode, params, linen_holder["cache"], tok_11, slot_11, one_11)),
            "nnx nnx.jit": (lambda: nnx_model.decode_step(model, tok_11, next(nnx_slots), one_11),
                            lambda: temp_bytes(nnx_model.decode_step, model, tok_11, slot_11, one_11)),
            "nnx split/merge": (split_call,
                                lambda: temp_bytes(split_decode, split_holder["state"], tok_11, slot_11, one_11))}


# ----------------------------------------------------------------------------- both, as rows
def measure(variants: dict, n: int, what: str) -> list[dict]:
    timed = time_interleaved({name: call for name, (call, _) in variants.items()}, n)
    rows = []
    for name, (_, memory) in variants.items():
        first_s, step_s = timed[name]
        rows.append({"step": what, "api": name, "first_call_s": first_s, "median_ms": step_s * 1e3,
                     "temp_bytes": memory()})
    return rows


def bench_apis(cfg, batch, n: int, device) -> dict:
    """Rows for the train step on `batch` and the batch-1 decode step, and their ratios."""
    import jax

    from ..core.model import init_params
    with jax.default_device(device):
        params = init_params(cfg, jax.random.key(0))
        batch = jax.device_put(batch, device)
        rows = measure(train_variants(cfg, params, batch, jax.random.key(1)), n, "train")
        rows += measure(decode_variants(cfg, params), max(n, 20), "decode")
    return {"rows": rows, "ratios": api_ratios(rows)}


def api_ratios(rows: list[dict]) -> dict:
    """The stable names: NNX's median step time over Linen's (above 1: NNX is slower), and
    NNX's temporary memory over Linen's, for the train step (decode_* for decoding)."""
    def find(step, api):
        return next(r for r in rows if r["step"] == step and r["api"] == api)
    ratios = {}
    for step, prefix in (("train", ""), ("decode", "decode_")):
        linen = find(step, "linen jax.jit")
        for api, name in (("nnx nnx.jit", "nnx_jit"), ("nnx split/merge", "nnx_split_merge")):
            ratios[f"{prefix}{name}_over_linen"] = find(step, api)["median_ms"] / linen["median_ms"]
        nnx_temp, linen_temp = find(step, "nnx nnx.jit")["temp_bytes"], linen["temp_bytes"]
        if nnx_temp is not None and linen_temp:
            ratios[f"{prefix}nnx_temp_memory_over_linen"] = nnx_temp / linen_temp
    same_code = [r for r in rows if r["api"] == "linen jax.jit, no fence"]
    if same_code:
        ratios["nnx_jit_over_linen_no_fence"] = find("train", "nnx nnx.jit")["median_ms"] / same_code[0]["median_ms"]
    return ratios


def print_apis(res: dict) -> None:
    print(f"\n{'step':<7} {'API':<24} {'median':>10} {'first call':>11} {'temp memory':>12}")
    for r in res["rows"]:
        temp = f"{r['temp_bytes'] / 2**20:.2f} MiB" if r["temp_bytes"] is not None else "n/a"
        print(f"{r['step']:<7} {r['api']:<24} {r['median_ms']:7.2f} ms {r['first_call_s']:9.2f} s {temp:>12}")
    print("ratios (NNX / Linen): " + ", ".join(f"{k} {v:.2f}x" for k, v in res["ratios"].items()))
