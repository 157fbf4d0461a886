"""The KV-cached sampler against the plain path, and its sampling controls."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from guppy_jax.core.config import PARITY_MODELS
from guppy_jax.core.generate import generate, generate_cached, greedy_uncached, left_pad, sample_logits

from .helpers import random_params

CFG = PARITY_MODELS["micro"]


@pytest.fixture(scope="module")
def params():
    return random_params(CFG, seed=4, scale=6.0)  # greedy decoding wanders instead of repeating a token


PROMPTS = [[1, 5, 9, 33], [1, 7], [1, 40, 41, 42, 43, 44, 45, 46, 47]]


def test_greedy_cached_equals_uncached(params):
    cached = generate(CFG, params, PROMPTS, max_new_tokens=12, temperature=0.0, prompt_len=16)
    plain = [greedy_uncached(CFG, params, p, 12) for p in PROMPTS]
    assert cached == plain
    assert len({t for row in cached for t in row}) > 3  # not a constant token: a flip would show


def test_same_key_same_sample_and_top_k_1_is_greedy(params):
    kw = dict(max_new_tokens=12, prompt_len=16, temperature=1.0)
    a = generate(CFG, params, PROMPTS, jax.random.key(1), **kw)
    assert a == generate(CFG, params, PROMPTS, jax.random.key(1), **kw)
    assert a != generate(CFG, params, PROMPTS, jax.random.key(2), **kw)
    greedy = generate(CFG, params, PROMPTS, max_new_tokens=12, prompt_len=16, temperature=0.0)
    assert generate(CFG, params, PROMPTS, jax.random.key(3), top_k=1, **kw) == greedy


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    seen = {int(sample_logits(logits, jax.random.key(i), 1.0, 0, 0.7)[0]) for i in range(200)}
    assert seen == {0, 1}  # 0.5 < 0.7 needs the second token; the third is never needed
    assert {int(sample_logits(logits, jax.random.key(i), 1.0, 2, 1.0)[0]) for i in range(200)} == {0, 1}


def test_stops_at_eos_and_pads_after():
    cfg = CFG
    logits_forcing_eos = np.full((1, cfg.vocab_size), -10.0, np.float32)
    logits_forcing_eos[0, cfg.eos_id] = 10.0
    assert int(sample_logits(logits_forcing_eos, jax.random.key(0), 0.0, 0, 1.0)[0]) == cfg.eos_id


def test_one_compilation_per_batch_and_length(params):
    generate_cached.clear_cache()  # count only this test's compilations
    before = generate_cached._cache_size()
    for temp, k in [(0.0, 0), (0.7, 50), (1.0, 5)]:  # sampling settings are traced, not static
        for prompts in (PROMPTS, [[1, 2, 3], [1], [1, 9, 9, 9, 9]]):
            generate(CFG, params, prompts, jax.random.key(0), max_new_tokens=8, prompt_len=16,
                     temperature=temp, top_k=k)
    assert generate_cached._cache_size() - before == 1


def test_left_pad_cuts_long_prompts_from_the_left():
    tokens, positions, segments = left_pad([[1, 2, 3, 4, 5, 6]], 4, pad_id=0)
    assert tokens.tolist() == [[3, 4, 5, 6]] and positions.tolist() == [[0, 1, 2, 3]]
    tokens, positions, segments = left_pad([[7, 8]], 4, pad_id=0)
    assert tokens.tolist() == [[0, 0, 7, 8]] and segments.tolist() == [[0, 0, 1, 1]]


def test_a_small_top_k_finds_the_same_cut_without_sorting_the_vocabulary():
    """The top-k fast path (the largest TOP_K_FAST logits only) against the full sort, over
    top-k and top-p settings where either filter decides the cut."""
    from guppy_jax.core.generate import TOP_K_FAST, _floor_from_sorted, _floor_of_top
    import jax.numpy as jnp
    import numpy as np
    logits = jnp.asarray(np.random.RandomState(0).standard_normal((8, 4096)) * 3, jnp.float32)
    for top_k in (1, 2, 50, TOP_K_FAST):
        for top_p in (0.05, 0.5, 0.9, 1.0):
            fast = _floor_of_top(jax.lax.top_k(logits, TOP_K_FAST)[0], logits, jnp.asarray(top_k), jnp.asarray(top_p))
            full = _floor_from_sorted(logits, jnp.asarray(top_k), jnp.asarray(top_p))
            assert float(jnp.abs(fast - full).max()) == 0.0, (top_k, top_p)
    # without the fast path (top-k 0, or above TOP_K_FAST): a draw over the whole filtered row
    key = jax.random.key(5)
    for top_k in (0, TOP_K_FAST + 1):
        got = sample_logits(logits, key, 0.8, top_k, 0.9)
        floor = _floor_from_sorted(logits / 0.8, jnp.asarray(top_k), jnp.asarray(0.9))
        want = jax.random.categorical(key, jnp.where(logits / 0.8 < floor, -jnp.inf, logits / 0.8), axis=-1)
        assert (np.asarray(got) == np.asarray(want)).all(), top_k


def test_the_fast_path_draws_the_kept_tokens_with_their_probabilities():
    """With a small top-k the draw is among the largest TOP_K_FAST logits only: it must give
    the kept tokens exactly the probabilities a draw over the whole filtered row gives."""
    import numpy as np
    row = jnp.asarray(np.random.RandomState(1).standard_normal((1, 300)) * 0.5, jnp.float32)
    n, k = 20_000, 5
    draws = jax.jit(jax.vmap(lambda key: sample_logits(row, key, 1.0, k, 1.0)[0]))(
        jax.random.split(jax.random.key(7), n))
    kept = np.argsort(-np.asarray(row[0]))[:k]
    want = np.exp(np.asarray(row[0])[kept]) / np.exp(np.asarray(row[0])[kept]).sum()
    counts = np.bincount(np.asarray(draws), minlength=300)
    assert set(np.flatnonzero(counts)) <= set(kept.tolist())
    worst = np.abs(counts[kept] / n - want).max()
    assert worst < 0.015, f"kept tokens' frequencies {counts[kept] / n} against probabilities {want}"
