"""The NNX model on its own and beside the Linen params: exact conversion, the state's
structure, the two train steps, the decode cache, packing, dropout."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from guppy_jax.core import nnx_model
from guppy_jax.core.config import PARITY_MODELS, OptimConfig
from guppy_jax.core.model import GuppyLM as LinenGuppyLM
from guppy_jax.core.model import init_params

CFG = PARITY_MODELS["micro"]


def flat(tree) -> dict:
    """{"a/b/c": leaf} for a nested dict or an nnx.State, whose every array sits under its
    Variable's `value` (dropped here)."""
    def name(key):
        return str(getattr(key, "key", getattr(key, "name", key)))
    found = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [name(k) for k in path]
        found["/".join(names[:-1] if names[-1] == "value" else names)] = leaf
    return found


def batch_of(tokens_BT) -> dict:
    return {"inputs": tokens_BT[:, :-1], "targets": tokens_BT[:, 1:], "loss_mask": jnp.ones_like(tokens_BT[:, 1:], bool)}


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(0))


def tokens(seed, B=2, T=CFG.max_seq_len):
    return jax.random.randint(jax.random.key(seed), (B, T), 3, CFG.vocab_size)


def test_linen_to_nnx_to_linen_is_bit_identical(params):
    back = nnx_model.nnx_to_linen(nnx_model.linen_to_nnx(params, CFG))
    before, after = flat(params), flat(back)
    assert before.keys() == after.keys()
    for path in before:
        assert after[path].dtype == before[path].dtype, path
        assert np.array_equal(np.asarray(after[path]), np.asarray(before[path])), path


def test_nnx_to_linen_to_nnx_is_bit_identical():
    model = nnx_model.GuppyLM(CFG, rngs=nnx.Rngs(3))
    again = nnx_model.linen_to_nnx(nnx_model.nnx_to_linen(model), CFG)
    before, after = flat(nnx.state(model)), flat(nnx.state(again))
    assert before.keys() == after.keys()
    assert all(np.array_equal(np.asarray(after[p]), np.asarray(before[p])) for p in before)


def test_the_split_state_lines_up_with_linens_params(params):
    """nnx.split's state holds the parameters alone (no rng, no cache), at Linen's paths, in
    Linen's leaf order, with Linen's shapes and values."""
    _, state = nnx.split(nnx_model.linen_to_nnx(params, CFG))
    assert flat(state).keys() == flat(params).keys()
    assert flat(nnx.state(nnx_model.linen_to_nnx(params, CFG), nnx.Param)).keys() == flat(state).keys()
    ours, linens = jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(params)
    assert len(ours) == len(linens) == 4 + 12 * CFG.n_layers
    for a, b in zip(ours, linens):
        assert a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))


def test_conversion_copies_so_donating_the_nnx_state_leaves_linens_params(params):
    model = nnx_model.linen_to_nnx(params, CFG)
    optimizer = nnx_model.make_optimizer(model, OptimConfig(warmup_steps=0, steps=10))
    step, state = nnx_model.make_split_train_step(model, optimizer, dropout=False)
    step(state, batch_of(tokens(1)), jax.random.key(0))  # donates the model's buffers
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(params))


def test_params_that_do_not_fit_are_refused(params):
    missing = dict(params)
    missing.pop("norm")
    with pytest.raises(ValueError, match="missing.*norm"):
        nnx_model.linen_to_nnx(missing, CFG)
    with pytest.raises(ValueError, match="pos_emb"):
        nnx_model.linen_to_nnx(params, CFG.replace(max_seq_len=2 * CFG.max_seq_len))


def test_the_nnx_model_computes_linens_logits_in_mixed_precision(params):
    t = tokens(2)
    for dtype in (jnp.float32, jnp.bfloat16):
        linen = LinenGuppyLM(CFG, dtype).apply({"params": params}, t)
        ours = nnx_model.linen_to_nnx(params, CFG, dtype)(t)
        assert ours.dtype == linen.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(linen))


def test_the_two_train_steps_agree_with_dropout_on(params):
    """nnx.jit on the objects and jax.jit on their split state: the same numbers, bit for bit,
    dropout included (its keys come from the step count, which both carry)."""
    oc = OptimConfig(warmup_steps=2, steps=10)
    model_a, model_b = nnx_model.linen_to_nnx(params, CFG), nnx_model.linen_to_nnx(params, CFG)
    opt_a, opt_b = nnx_model.make_optimizer(model_a, oc), nnx_model.make_optimizer(model_b, oc)
    step_a = nnx_model.make_train_step(dropout=True)
    step_b, state_b = nnx_model.make_split_train_step(model_b, opt_b, dropout=True)
    rng, losses = jax.random.key(4), []
    for i in range(4):
        batch = batch_of(tokens(10 + i))
        got_a = step_a(model_a, opt_a, batch, rng)
        state_b, got_b = step_b(state_b, batch, rng)
        assert {k: float(v) for k, v in got_a.items()} == {k: float(v) for k, v in got_b.items()}
        losses.append(float(got_a["loss"]))
    nnx.update((model_b, opt_b), state_b)
    a, b = flat(nnx_model.nnx_to_linen(model_a)), flat(nnx_model.nnx_to_linen(model_b))
    assert all(np.array_equal(np.asarray(a[p]), np.asarray(b[p])) for p in a)
    assert int(opt_a.step[...]) == int(opt_b.step[...]) == 4
    # dropout was on: the first step without it gives another loss
    model_c = nnx_model.linen_to_nnx(params, CFG)
    plain = nnx_model.make_train_step(dropout=False)(model_c, nnx_model.make_optimizer(model_c, oc),
                                                      batch_of(tokens(10)), rng)
    assert float(plain["loss"]) != losses[0]


def test_the_schedule_is_in_the_optimizer(params):
    """Update 0 of a warmup has lr 0 and leaves every parameter as it was; update 1 moves them."""
    model = nnx_model.linen_to_nnx(params, CFG)
    optimizer = nnx_model.make_optimizer(model, OptimConfig(warmup_steps=5, steps=10))
    step = nnx_model.make_train_step(dropout=False)
    step(model, optimizer, batch_of(tokens(5)), jax.random.key(0))
    after_0 = flat(nnx_model.nnx_to_linen(model))
    assert all(np.array_equal(np.asarray(after_0[p]), np.asarray(v)) for p, v in flat(params).items())
    step(model, optimizer, batch_of(tokens(5)), jax.random.key(0))
    after_1 = flat(nnx_model.nnx_to_linen(model))
    assert any(not np.array_equal(np.asarray(after_1[p]), np.asarray(v)) for p, v in after_0.items())


def test_feeding_the_cache_in_pieces_gives_the_full_forward(params):
    model = nnx_model.linen_to_nnx(params, CFG)
    t = tokens(6, B=2, T=12)
    full = model(t)
    model.init_cache(2)
    pieces = []
    for lo, hi in ((0, 5), (5, 6), (6, 12)):  # a prefill, one token, then a chunk
        positions = jnp.broadcast_to(jnp.arange(lo, hi), (2, hi - lo))
        pieces.append(model(t[:, lo:hi], positions, decode=True))
    np.testing.assert_allclose(np.asarray(jnp.concatenate(pieces, axis=1)), np.asarray(full), atol=1e-5, rtol=0)
    assert int(model.blocks[0].attn.cache.index[...]) == 12
    model.clear_cache()
    assert flat(nnx.state(model)).keys() == flat(params).keys()  # parameters alone again
    with pytest.raises(ValueError, match="init_cache"):
        model(t[:, :1], jnp.zeros((2, 1), jnp.int32), decode=True)


def test_generation_matches_linens_and_each_prompt_alone(params):
    from guppy_jax.core.generate import generate
    model = nnx_model.linen_to_nnx(params, CFG)
    prompts = [[5, 6, 7], [9], [20, 21, 22, 23, 24, 25]]
    for temperature in (0.0, 0.7):
        ours = nnx_model.generate(model, prompts, jax.random.key(1), max_new_tokens=8, temperature=temperature)
        assert ours == generate(CFG, params, prompts, jax.random.key(1), max_new_tokens=8, temperature=temperature)
    greedy = nnx_model.generate(model, prompts, max_new_tokens=8, temperature=0.0)
    assert greedy == [nnx_model.generate(model, [p], max_new_tokens=8, temperature=0.0)[0] for p in prompts]
    assert not hasattr(model.blocks[0].attn, "cache")  # generate leaves no cache behind


def test_packed_rows_attend_only_within_their_conversation(params):
    model = nnx_model.linen_to_nnx(params, CFG)
    convs = [np.arange(3, 9), np.arange(40, 50), np.arange(100, 105)]
    tokens_BT = np.concatenate(convs)[None].astype(np.int32)
    positions = np.concatenate([np.arange(len(c)) for c in convs])[None]
    segments = np.concatenate([np.full(len(c), s) for s, c in enumerate(convs, start=1)])[None]
    packed = np.asarray(model(tokens_BT, positions, segments))
    at = 0
    for conv in convs:
        alone = np.asarray(model(conv[None].astype(np.int32)))
        np.testing.assert_allclose(packed[:, at:at + len(conv)], alone, atol=1e-5, rtol=0)
        at += len(conv)


def test_dropout_needs_a_key_and_follows_it(params):
    model = nnx_model.linen_to_nnx(params, CFG.replace(dropout=0.5))
    t = tokens(8)
    plain = model(t)
    np.testing.assert_array_equal(np.asarray(model(t, rngs=nnx.Rngs(dropout=1))), np.asarray(plain))  # deterministic
    one = model(t, deterministic=False, rngs=nnx.Rngs(dropout=1))
    assert np.array_equal(np.asarray(one), np.asarray(model(t, deterministic=False, rngs=nnx.Rngs(dropout=1))))
    assert not np.array_equal(np.asarray(one), np.asarray(model(t, deterministic=False, rngs=nnx.Rngs(dropout=2))))
    assert not np.array_equal(np.asarray(one), np.asarray(plain))
    with pytest.raises(Exception):  # noqa: B017 (flax's own error, worded per version)
        model(t, deterministic=False)


def test_intermediates_are_named_like_the_reference(params):
    logits, found = nnx_model.forward_with_intermediates(nnx_model.linen_to_nnx(params, CFG), tokens(9, T=8))
    assert logits.shape == (2, 8, CFG.vocab_size)
    assert sorted(found) == sorted(f"blocks.{i}.{n}" for i in range(CFG.n_layers)
                                   for n in ("attn_probs", "attn_out", "block_out"))
    assert found["blocks.1.attn_probs"].shape == (2, CFG.n_heads, 8, 8)
    assert float(jnp.triu(found["blocks.1.attn_probs"], k=1).max()) == 0.0  # causal
