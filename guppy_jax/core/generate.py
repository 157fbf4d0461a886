"""Sampling from GuppyLM: a jit-compiled loop over a fixed-size key/value cache.

Prompts are left-padded into a fixed (B, prompt_len) buffer: pad slots get segment id
0 and real tokens segment 1, so a prompt never attends to its padding, and each real
token gets position = its index in its own prompt (as if it were alone). The first
call runs the whole buffer once (prefill); each new token then costs one position.
Temperature, top-k and top-p are traced values, so changing them does not recompile;
the shapes (batch, prompt_len, max_new_tokens) decide the one compilation.

Shape suffixes as in model.py, plus N: new tokens (max_new_tokens).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .config import ModelConfig

# GuppyLM (and with it Flax) is imported where a sampler is traced, not here: a chat whose
# sampler is loaded already compiled (compiled_sampler.py) never needs Flax.


def default_answer_len(cfg: ModelConfig) -> int:
    """The original's 64 new tokens, or half the context for models with a short one."""
    return min(64, cfg.max_seq_len // 2)


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """ValueError unless temperature >= 0, top_k >= 0 and 0 < top_p <= 1 (NaN fails too)."""
    if not (temperature >= 0 and top_k >= 0 and 0 < top_p <= 1):
        raise ValueError(f"need temperature >= 0, top-k >= 0 and 0 < top-p <= 1, got temperature "
                         f"{temperature}, top-k {top_k}, top-p {top_p}")


def left_pad(prompts: list[list[int]], prompt_len: int, pad_id: int):
    """Token lists -> (tokens_BT, positions_BT, segment_ids_BT) numpy arrays, each row's
    prompt right-aligned. Prompts longer than prompt_len keep their last prompt_len tokens."""
    B = len(prompts)
    tokens = np.full((B, prompt_len), pad_id, np.int32)
    positions = np.zeros((B, prompt_len), np.int32)
    segments = np.zeros((B, prompt_len), np.int32)
    for b, ids in enumerate(prompts):
        ids = list(ids)[-prompt_len:]
        if not ids:
            raise ValueError(f"prompt {b} is empty")
        n = len(ids)
        tokens[b, prompt_len - n:] = ids
        positions[b, prompt_len - n:] = np.arange(n)
        segments[b, prompt_len - n:] = 1
    return tokens, positions, segments


TOP_K_FAST = 128  # a top-k up to this size is served without sorting the whole vocabulary


def _floor_from_sorted(scaled_BV, top_k, top_p):
    """The smallest logit each row keeps under top-k and top-p, from a full sort (any top-k,
    0 included)."""
    V = scaled_BV.shape[-1]
    sorted_BV = jnp.sort(scaled_BV, axis=-1)[:, ::-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, V), V)
    kth_B1 = jnp.take(sorted_BV, k - 1, axis=-1)[:, None]
    # top-p: keep the smallest prefix of the sorted tokens whose probability reaches top_p
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    n_keep_B = jnp.maximum((before_BV < top_p).sum(axis=-1), 1)
    pth_B1 = jnp.take_along_axis(sorted_BV, n_keep_B[:, None] - 1, axis=-1)
    return jnp.maximum(kth_B1, pth_B1)


def _floor_of_top(top_BC, scaled_BV, top_k, top_p):
    """The same floor when 0 < top_k <= TOP_K_FAST, from the C largest logits alone (C =
    TOP_K_FAST, `top_BC`, largest first): every kept token is among them, and a nucleus that
    ends past the k-th token is cut at the k-th anyway. Probabilities are still normalised
    over the whole row."""
    kth_B1 = jnp.take(top_BC, top_k - 1, axis=-1)[:, None]
    probs_BC = jnp.exp(top_BC - jax.nn.logsumexp(scaled_BV, axis=-1, keepdims=True))
    before_BC = jnp.cumsum(probs_BC, axis=-1) - probs_BC
    n_keep_B = jnp.maximum((before_BC < top_p).sum(axis=-1), 1)
    pth_B1 = jnp.take_along_axis(top_BC, n_keep_B[:, None] - 1, axis=-1)
    return jnp.maximum(kth_B1, pth_B1)


def _sample_from_top(scaled_BV, rng, top_k, top_p):
    """A small top-k's draw among the C largest logits only: the kept tokens are all there,
    so this is the same distribution as a draw over the filtered row, for C random numbers
    a row instead of V (a tie at the cut that runs past the C-th logit keeps the first C)."""
    top_BC, index_BC = jax.lax.top_k(scaled_BV, min(TOP_K_FAST, scaled_BV.shape[-1]))
    floor_B1 = _floor_of_top(top_BC, scaled_BV, top_k, top_p)
    pick_B = jax.random.categorical(rng, jnp.where(top_BC < floor_B1, -jnp.inf, top_BC), axis=-1)
    return jnp.take_along_axis(index_BC, pick_B[:, None], axis=-1)[:, 0]


def _sample_from_sorted(scaled_BV, rng, top_k, top_p):
    floor_B1 = _floor_from_sorted(scaled_BV, top_k, top_p)
    return jax.random.categorical(rng, jnp.where(scaled_BV < floor_B1, -jnp.inf, scaled_BV), axis=-1)


@jax.jit  # a function of its own when called alone, as the tests do; inlined in the sampler
def sample_logits(logits_BV, rng, temperature, top_k, top_p):
    """One token per row. temperature 0 is greedy (and then nothing is sampled); top_k 0 and
    top_p 1 switch those filters off. A top-k of at most TOP_K_FAST (the original's 50) looks
    at the largest logits only: sorting all 4,096 of them cost more than the model's decode
    step at batch 36."""
    def sample():
        scaled_BV = logits_BV / jnp.maximum(temperature, 1e-6)
        fast = (top_k > 0) & (top_k <= min(TOP_K_FAST, logits_BV.shape[-1]))
        return jax.lax.cond(fast, _sample_from_top, _sample_from_sorted, scaled_BV, rng, top_k, top_p)

    greedy = lambda: jnp.argmax(logits_BV, axis=-1)  # noqa: E731
    return jax.lax.cond(temperature <= 0, greedy, sample).astype(jnp.int32)


def init_cache(cfg: ModelConfig, batch_size: int):
    """An all-zero cache for `batch_size` rows of `cfg.max_seq_len` slots."""
    from .model import GuppyLM
    shapes = jax.eval_shape(
        lambda: GuppyLM(cfg).init(jax.random.key(0), jnp.zeros((batch_size, 1), jnp.int32),
                                  jnp.zeros((batch_size, 1), jnp.int32), decode=True)["cache"])
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@partial(jax.jit, static_argnames=("cfg", "max_new_tokens"))
def generate_cached(params, tokens_BT, positions_BT, segment_ids_BT, rng, temperature=0.7,
                    top_k=50, top_p=1.0, *, cfg: ModelConfig, max_new_tokens: int):
    """New tokens (B, max_new_tokens) and how many each row made before stopping.

    Rows that emit eos stop (eos included in their count); later slots hold pad_id.
    """
    from .model import GuppyLM
    B, P = tokens_BT.shape
    if P + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt_len {P} + max_new_tokens {max_new_tokens} exceeds the "
                         f"{cfg.max_seq_len}-token context")
    model = GuppyLM(cfg)
    # no cache passed in: with "cache" mutable, the prefill creates it (zeros, then this step's
    # keys and values), which spares tracing the model once more just for its shapes
    logits_BTV, mut = model.apply({"params": params}, tokens_BT, positions_BT, segment_ids_BT,
                                  decode=True, mutable=["cache"])
    next_pos_B = positions_BT[:, -1] + 1
    out_BN = jnp.full((B, max_new_tokens), cfg.pad_id, jnp.int32)

    def cond(carry):
        i, _, _, done_B, _ = carry
        return (i < max_new_tokens) & ~done_B.all()

    def body(carry):
        # sample token i from the last logits, then run the model on it for the next ones:
        # one sampler in the program, where sampling before the loop as well made two
        i, cache, out_BN, done_B, logits_BV = carry
        tok_B = sample_logits(logits_BV, jax.random.fold_in(rng, i), temperature, top_k, top_p)
        tok_B = jnp.where(done_B, cfg.pad_id, tok_B)
        logits_B1V, mut = model.apply(
            {"params": params, "cache": cache}, tok_B[:, None], (next_pos_B + i)[:, None],
            jnp.ones((B, 1), jnp.int32), decode=True, mutable=["cache"])
        return i + 1, mut["cache"], out_BN.at[:, i].set(tok_B), done_B | (tok_B == cfg.eos_id), logits_B1V[:, 0]

    init = (jnp.array(0), mut["cache"], out_BN, jnp.zeros((B,), bool), logits_BTV[:, -1])
    _, _, out_BN, _, _ = jax.lax.while_loop(cond, body, init)
    is_eos_BN = out_BN == cfg.eos_id
    first_eos_B = jnp.where(is_eos_BN.any(axis=1), jnp.argmax(is_eos_BN, axis=1), max_new_tokens - 1)
    return out_BN, first_eos_B + 1


def generate(cfg: ModelConfig, params, prompts: list[list[int]], rng=None, *, max_new_tokens=64,
             temperature=0.7, top_k=50, top_p=1.0, prompt_len=None, sampler=None) -> list[list[int]]:
    """Sample continuations of several prompts; returns each row's new tokens, up to and
    including eos. prompt_len defaults to the context left after max_new_tokens. `sampler`:
    generate_cached for these shapes in another form (compiled_sampler.sampler), or None for it."""
    prompt_len = prompt_len or cfg.max_seq_len - max_new_tokens
    if prompt_len < 1:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                         f"{cfg.max_seq_len}-token context")
    tokens, positions, segments = left_pad(prompts, prompt_len, cfg.pad_id)
    rng = jax.random.key(0) if rng is None else rng
    if sampler is None:
        sampler = partial(generate_cached, cfg=cfg, max_new_tokens=max_new_tokens)
    out, counts = sampler(params, tokens, positions, segments, rng, temperature, top_k, top_p)
    out, counts = np.asarray(out), np.asarray(counts)
    return [out[b, :counts[b]].tolist() for b in range(len(prompts))]


def greedy_uncached(cfg: ModelConfig, params, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding that re-runs the whole sequence per token, like the original (for tests).

    The window is right-padded to max_seq_len so that one compilation serves every length;
    causal attention keeps the padding from reaching the real positions.
    """
    from .model import GuppyLM
    forward = jax.jit(lambda p, t: GuppyLM(cfg).apply({"params": p}, t))
    ids = list(prompt)
    for _ in range(max_new_tokens):
        window = ids[-cfg.max_seq_len:]
        padded = np.full((1, cfg.max_seq_len), cfg.pad_id, np.int32)
        padded[0, :len(window)] = window
        next_id = int(jnp.argmax(forward(params, padded)[0, len(window) - 1]))
        ids.append(next_id)
        if next_id == cfg.eos_id:
            break
    return ids[len(prompt):]
