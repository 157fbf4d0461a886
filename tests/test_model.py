"""The Flax model on its own: shapes without computing, the decode cache, the intermediates,
the gradient fence."""
import jax
import jax.numpy as jnp
import numpy as np

from guppy_jax.core import model
from guppy_jax.core.config import PARITY_MODELS
from guppy_jax.export.convert_weights import abstract_params
from guppy_jax.core.generate import init_cache
from guppy_jax.core.model import GuppyLM, forward_with_intermediates, init_params

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


def test_the_cache_takes_and_gives_keys_and_values_in_the_references_shapes():
    B, H, S, K = 2, CFG.n_heads, CFG.max_seq_len, CFG.head_dim
    k_BHTK = jax.random.normal(jax.random.key(4), (B, H, 3, K))
    (k_BHSK, v_BHSK, seg_BS, start), _ = model.KVCache(S).init_with_output(
        jax.random.key(0), k_BHTK, 2 * k_BHTK, jnp.ones((B, 3), jnp.int32))
    assert k_BHSK.shape == v_BHSK.shape == (B, H, S, K) and seg_BS.shape == (B, S) and int(start) == 0
    np.testing.assert_array_equal(k_BHSK[:, :, :3], k_BHTK)
    np.testing.assert_array_equal(v_BHSK[:, :, :3], 2 * k_BHTK)
    assert not np.asarray(k_BHSK[:, :, 3:]).any()


def test_einsum_bh_is_einsum():
    a = jax.random.normal(jax.random.key(5), (2, 3, 4, 5))
    b = jax.random.normal(jax.random.key(6), (2, 3, 6, 5))
    np.testing.assert_allclose(model.einsum_bh("bhtk,bhsk->bhts", a, b, jnp.float32),
                               jnp.einsum("bhtk,bhsk->bhts", a, b), rtol=1e-6, atol=1e-6)
    half = model.einsum_bh("bhtk,bhsk->bhts", a, b, jnp.bfloat16)
    assert half.dtype == jnp.bfloat16
    np.testing.assert_array_equal(half, jnp.einsum("bhtk,bhsk->bhts", a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)))


def value_and_grad(fn, x, fence: bool):
    """fn's value and gradient at x, traced with the gradient fence on or off."""
    with model.gradient_fence(fence):
        return jax.jit(jax.value_and_grad(fn))(x)  # a new function: traced now, with this setting


def test_the_gradient_fence_changes_no_number():
    x = jax.random.normal(jax.random.key(3), (2, 5, 8))
    w = jax.random.normal(jax.random.key(4), (8,))
    through_fence = lambda x: (jnp.sin(model.norm_input(x)) * w).sum()  # noqa: E731
    fenced, plain = value_and_grad(through_fence, x, True), value_and_grad(through_fence, x, False)
    assert float(fenced[0]) == float(plain[0])
    np.testing.assert_array_equal(fenced[1], plain[1])  # the fence passes the gradient on unchanged

    # In the model the value is still exact. The gradient reaching the residual stream is a sum
    # of the LayerNorm's part and the residual path's, and with the fence jax adds them in
    # another order: equal up to float32 rounding.
    params = init_params(CFG, jax.random.key(5))
    tokens = jax.random.randint(jax.random.key(6), (2, 9), 0, CFG.vocab_size)
    loss = lambda p: jnp.mean(GuppyLM(CFG).apply({"params": p}, tokens) ** 2)  # noqa: E731
    (fenced_loss, fenced_grads), (plain_loss, plain_grads) = value_and_grad(loss, params, True), \
        value_and_grad(loss, params, False)
    assert float(fenced_loss) == float(plain_loss)
    for a, b in zip(jax.tree_util.tree_leaves(fenced_grads), jax.tree_util.tree_leaves(plain_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(jnp.abs(b).max()))


def test_on_the_cpu_the_gradient_of_each_layernorms_input_passes_the_barrier(monkeypatch):
    """Where the fence acts: once per LayerNorm (two a block and the final one), in the backward
    pass only, on the CPU only, and nowhere with GRADIENT_FENCE off. Counted by watching
    `lax.optimization_barrier` while jax traces the gradient: XLA:CPU's compiled program keeps no
    barrier op to look for (it is spent once it has kept the fusions apart)."""
    barriers = []
    barrier = jax.lax.optimization_barrier
    monkeypatch.setattr(jax.lax, "optimization_barrier", lambda g: barriers.append(g.shape) or barrier(g))
    params = init_params(CFG, jax.random.key(7))
    tokens = jnp.ones((2, 7), jnp.int32)
    loss = lambda p: GuppyLM(CFG).apply({"params": p}, tokens).sum()  # noqa: E731

    loss(params)
    assert barriers == []  # the forward pass has none
    jax.grad(loss)(params)
    on_cpu = jax.default_backend() == "cpu"
    assert barriers == ([(2, 7, CFG.d_model)] * (2 * CFG.n_layers + 1) if on_cpu else [])
    barriers.clear()
    monkeypatch.setattr(model, "GRADIENT_FENCE", False)
    jax.grad(loss)(params)
    assert barriers == []
