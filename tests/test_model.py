"""The Flax model on its own: shapes without computing, the decode cache, the intermediates."""
import jax
import jax.numpy as jnp
import numpy as np

from guppy_jax.config import PARITY_MODELS
from guppy_jax.convert_weights import abstract_params
from guppy_jax.generate import init_cache
from guppy_jax.model import GuppyLM, forward_with_intermediates, grad_fence, init_params

CFG = PARITY_MODELS["micro"]


def test_abstract_params_match_init_and_count_the_9m():
    real = init_params(CFG, jax.random.key(0))
    shapes = abstract_params(CFG)
    assert jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), real) == \
        jax.tree_util.tree_map(lambda s: (s.shape, s.dtype), shapes)
    big = abstract_params(PARITY_MODELS["guppy-9m"])  # no memory, no compute
    assert sum(s.size for s in jax.tree_util.tree_leaves(big)) == 8_726_016


def test_feeding_the_cache_in_pieces_gives_the_full_forward():
    params = init_params(CFG, jax.random.key(1))
    tokens = np.arange(3, 3 + 12, dtype=np.int32)[None]
    full = GuppyLM(CFG).apply({"params": params}, tokens)
    cache, pieces = init_cache(CFG, 1), []
    for lo, hi in ((0, 5), (5, 6), (6, 12)):  # a prefill, one token, then a chunk
        positions = jnp.arange(lo, hi)[None]
        logits, mut = GuppyLM(CFG).apply({"params": params, "cache": cache}, tokens[:, lo:hi], positions,
                                         decode=True, mutable=["cache"])
        cache = mut["cache"]
        pieces.append(logits)
    assert float(jnp.abs(jnp.concatenate(pieces, axis=1) - full).max()) < 1e-5
    assert int(cache["blocks_0"]["attn"]["cache"]["index"]) == 12


def test_intermediates_are_named_like_the_reference():
    params = init_params(CFG, jax.random.key(2))
    logits, found = forward_with_intermediates(CFG, params, jnp.ones((2, 8), jnp.int32))
    assert logits.shape == (2, 8, CFG.vocab_size)
    assert sorted(found) == sorted(f"blocks.{i}.{n}" for i in range(CFG.n_layers)
                                   for n in ("attn_probs", "attn_out", "block_out"))
    probs = found["blocks.1.attn_probs"]
    assert probs.shape == (2, CFG.n_heads, 8, 8)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-5)
    assert float(jnp.triu(probs, k=1).max()) == 0.0  # causal


def test_grad_fence_changes_no_number_and_puts_a_barrier_on_the_gradient():
    x = jax.random.normal(jax.random.key(3), (2, 5, 8))
    fenced = lambda x: (jnp.tanh(grad_fence(x)) ** 2 * x).sum()
    plain = lambda x: (jnp.tanh(x) ** 2 * x).sum()
    assert float(fenced(x)) == float(plain(x))
    # equal up to rounding: XLA may order the fused arithmetic differently on either side
    np.testing.assert_allclose(jax.jit(jax.grad(fenced))(x), jax.jit(jax.grad(plain))(x), rtol=1e-6, atol=1e-7)
    backward = str(jax.make_jaxpr(jax.grad(fenced))(x))
    assert ("optimization_barrier" in backward) == (jax.default_backend() == "cpu")  # fenced on the CPU only
    assert "optimization_barrier" not in str(jax.make_jaxpr(fenced)(x))
