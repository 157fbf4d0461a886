"""The pure training pieces: the masked loss, the torch-style clip, the jitted steps."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from guppy_jax.core.config import PARITY_MODELS, OptimConfig
from guppy_jax.core.model import GuppyLM, init_params
from guppy_jax.core.steps import (clip_by_global_norm_like_torch, create_state, eval_step, lm_loss,
                             make_eval_step, make_train_step, train_step, train_steps)

CFG = PARITY_MODELS["micro"].replace(dropout=0.0)


def batch(seed, B=2, T=16):
    rs = np.random.RandomState(seed)
    seq = rs.randint(3, CFG.vocab_size, (B, T + 1))
    mask = np.ones((B, T), bool)
    mask[1, T // 2:] = False  # a half-padded row
    return {"inputs": seq[:, :-1].astype(np.int32), "targets": seq[:, 1:].astype(np.int32), "loss_mask": mask}


def test_lm_loss_is_the_mean_over_counted_targets_and_eval_step_agrees():
    rs = np.random.RandomState(0)
    logits = rs.randn(2, 5, 7).astype(np.float32)
    targets = rs.randint(0, 7, (2, 5))
    mask = rs.rand(2, 5) > 0.4
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    want = (ce * mask).sum() / mask.sum()
    assert abs(float(lm_loss(logits, targets, mask)) - want) < 1e-6
    assert float(lm_loss(logits, targets, np.zeros_like(mask))) == 0.0  # not NaN
    params = init_params(CFG, jax.random.key(0))
    b = batch(1)
    got = eval_step(GuppyLM(CFG).apply, params, b)
    logits_BTV = GuppyLM(CFG).apply({"params": params}, b["inputs"])
    assert int(got["tokens"]) == b["loss_mask"].sum()
    np.testing.assert_allclose(float(got["loss_sum"] / got["tokens"]),
                               float(lm_loss(logits_BTV, b["targets"], b["loss_mask"])), rtol=1e-6)


def test_clip_divides_by_norm_plus_1e_6_like_torch():
    grads = {"a": jnp.full((4,), 3.0), "b": jnp.full((1,), 4.0)}  # norm sqrt(36 + 16)
    clipped, _ = clip_by_global_norm_like_torch(1.0).update(grads, optax.EmptyState())
    scale = 1.0 / (np.sqrt(52.0) + 1e-6)
    np.testing.assert_allclose(np.asarray(clipped["a"]), 3.0 * scale, rtol=1e-6)
    small = {"a": jnp.full((2,), 0.1)}
    np.testing.assert_array_equal(clip_by_global_norm_like_torch(1.0).update(small, None)[0]["a"], small["a"])


def test_k_steps_in_one_call_equal_k_single_steps():
    oc = OptimConfig(warmup_steps=0, steps=10)
    params = init_params(CFG, jax.random.key(0))
    rng = jax.random.key(5)
    single, losses = create_state(CFG, oc, params), []
    for i in range(3):
        single, m = jax.jit(train_step)(single, batch(i), rng)
        losses.append(float(m["loss"]))
    stacked = {k: np.stack([batch(i)[k] for i in range(3)]) for k in batch(0)}
    scanned, metrics = jax.jit(train_steps)(create_state(CFG, oc, params), stacked, rng)
    assert metrics["loss"].shape == (3,) and int(scanned.step) == int(single.step) == 3
    np.testing.assert_allclose(np.asarray(metrics["loss"]), losses, atol=1e-6)
    # the same updates; two compiled programs may round differently (Adam moves by ~lr)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), single.params, scanned.params)
    assert max(jax.tree_util.tree_leaves(diffs)) <= 2e-6  # measured 3e-7


def test_each_made_step_has_its_own_compile_count():
    oc = OptimConfig(warmup_steps=0, steps=10)
    first, second = make_train_step(), make_train_step()
    state = create_state(CFG, oc, init_params(CFG, jax.random.key(0)))
    for i in range(3):  # same shapes: one compilation however many calls
        state, _ = first(state, batch(i), jax.random.key(0))
    assert first.traces() == 1 and second.traces() == 0
    evaluate = make_eval_step(GuppyLM(CFG).apply)
    evaluate(state.params, batch(0))
    evaluate(state.params, batch(1, B=3))  # a new shape compiles again
    assert evaluate.traces() == 2


def test_a_step_with_overflowing_gradients_changes_nothing_but_step_and_scale():
    from guppy_jax.core.steps import LossScale
    oc = OptimConfig(warmup_steps=0, steps=10)
    state = create_state(CFG, oc, init_params(CFG, jax.random.key(0)), jnp.float16,
                         LossScale.create(init_scale=2.0**60))  # so large that float16 gradients overflow
    new, metrics = jax.jit(train_step)(state, batch(0), jax.random.key(0))
    assert bool(metrics["skipped"]) and float(metrics["loss_scale"]) == 2.0**60
    assert int(new.step) == 1 and float(new.loss_scale.scale) == 2.0**59 and int(new.loss_scale.skipped) == 1
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new.params),
                                                  jax.tree_util.tree_leaves(state.params)))
    adam = new.opt_state[1]
    assert int(adam.count) == 0  # Adam's bias correction did not count the skipped step
    fine = new.replace(loss_scale=LossScale.create())  # a sane scale: this step applies
    after, metrics = jax.jit(train_step)(fine, batch(0), jax.random.key(0))
    assert not bool(metrics["skipped"]) and int(after.opt_state[1].count) == 1
    assert float(metrics["lr"]) == float(fine.lr_fn(1))  # the schedule went on from the global step


def test_the_scale_doubles_after_the_growth_interval_and_halves_on_overflow():
    from guppy_jax.core.steps import LossScale
    scale, seen = LossScale.create(8.0, growth_interval=3), []
    for finite in (True, True, True, True, False, True, True, True):
        scale = scale.after(jnp.asarray(finite))
        seen.append(float(scale.scale))
    assert seen == [8.0, 8.0, 16.0, 16.0, 8.0, 8.0, 8.0, 16.0]  # torch GradScaler's sequence
    assert int(scale.skipped) == 1


def test_the_default_step_updates_exactly_as_a_step_without_donation():
    """Two 9M steps back to back, nothing read to the host between them: the step as train
    makes it and one that never donates its state give the same loss bit for bit. With jax
    0.7.2 on XLA:CPU a donated step gave 8.405626 where the undonated one gave 8.399631, so
    before jax 0.8 steps.make_train_step does not donate (steps.DONATION_IS_SAFE)."""
    cfg = PARITY_MODELS["guppy-9m"].replace(dropout=0.0)
    params = init_params(cfg, jax.random.key(0))
    rs = np.random.RandomState(0)
    rows = []
    for _ in range(2):
        seq = rs.randint(3, cfg.vocab_size, (4, cfg.max_seq_len + 1))
        rows.append({"inputs": seq[:, :-1].astype(np.int32), "targets": seq[:, 1:].astype(np.int32),
                     "loss_mask": np.ones((4, cfg.max_seq_len), bool)})
    losses = {}
    for name, step in (("default", make_train_step(dropout=False)),
                       ("undonated", make_train_step(dropout=False, donate=False))):
        state = create_state(cfg, OptimConfig(warmup_steps=0, steps=50), jax.tree.map(jnp.copy, params))
        state, _ = step(state, rows[0], jax.random.key(0))
        state, metrics = step(state, rows[1], jax.random.key(0))
        losses[name] = float(metrics["loss"])
    assert losses["default"] == losses["undonated"]
