"""The pure training pieces: loss, optimizer, loss scale, TrainState, train_step and eval_step.

A batch is a dict of equally shaped (B, T) arrays: `inputs`, `targets`, `loss_mask`
(true where a target counts), and optionally `positions` and `segment_ids` for packed
rows. Nothing here touches the host: metrics stay on the device until asked for.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from .config import ModelConfig, OptimConfig
from .model import GuppyLM
from .schedule import warmup_cosine


def masked_ce_sum(logits_BTV, targets_BT, mask_BT):
    """(summed cross-entropy over the targets where mask is true, how many there are)."""
    ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, targets_BT)
    mask_BT = mask_BT.astype(ce_BT.dtype)
    return (ce_BT * mask_BT).sum(), mask_BT.sum()


def lm_loss(logits_BTV, targets_BT, mask_BT):
    """Mean cross-entropy over the targets where mask is true; 0 (not NaN) when none are."""
    loss_sum, count = masked_ce_sum(logits_BTV, targets_BT, mask_BT)
    return loss_sum / jnp.maximum(count, 1.0)


def lr_schedule(oc: OptimConfig):
    return lambda count: warmup_cosine(count, peak=oc.lr, floor=oc.min_lr, warmup=oc.warmup_steps,
                                       total=oc.steps, xp=jnp)


def clip_by_global_norm_like_torch(max_norm: float, eps: float = 1e-6) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6)).

    optax.clip_by_global_norm divides by the exact norm instead; the 1e-6 makes the two
    differ by ~1e-6 / norm relative on every clipped step, which the parity tests can see.
    """

    def update(updates, state, params=None):
        del params
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + eps))
        return jax.tree_util.tree_map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(oc: OptimConfig) -> optax.GradientTransformation:
    """Clip the global grad norm (as PyTorch does), then AdamW's moments and decoupled weight
    decay on every parameter. The learning rate is applied by `apply_update` from the
    global step, not counted inside the chain: a skipped float16 step still advances the
    schedule (as in the original's loop) while Adam's own count, its bias correction, only
    counts the updates applied (as torch.optim.AdamW's does)."""
    return optax.chain(
        clip_by_global_norm_like_torch(oc.grad_clip),
        optax.scale_by_adam(b1=oc.beta1, b2=oc.beta2, eps=oc.eps),
        optax.add_decayed_weights(oc.weight_decay),
    )


class LossScale(struct.PyTreeNode):
    """PyTorch GradScaler's dynamic loss scale, kept as data in the train state.

    The loss is multiplied by `scale` before differentiating, so that small float16
    gradients do not flush to zero, and the gradients are divided by it before the update.
    A step whose gradients hold inf or NaN is skipped and the scale halves; after
    `growth_interval` finite steps in a row it doubles. (flax's DynamicScale grows one
    step later and optax.apply_if_finite does not scale; this is torch's rule exactly.)
    """

    scale: jax.Array        # float32, a power of two
    good_steps: jax.Array   # finite steps since the scale last changed
    skipped: jax.Array      # steps skipped so far
    growth_interval: int = struct.field(pytree_node=False, default=2000)

    @classmethod
    def create(cls, init_scale: float = 2.0**16, growth_interval: int = 2000) -> "LossScale":
        return cls(jnp.asarray(init_scale, jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
                   growth_interval)

    def after(self, finite) -> "LossScale":
        """The scale for the next step, given whether this step's gradients were finite."""
        grow = finite & (self.good_steps + 1 >= self.growth_interval)
        scale = jnp.where(finite, jnp.where(grow, self.scale * 2, self.scale), self.scale * 0.5)
        good = jnp.where(finite & ~grow, self.good_steps + 1, 0)
        return self.replace(scale=scale, good_steps=good, skipped=self.skipped + (~finite).astype(jnp.int32))


class TrainState(train_state.TrainState):
    """step, params, opt_state and (float16 only) loss_scale; apply_fn, tx and lr_fn are
    static (not traced, not saved)."""

    lr_fn: Callable = struct.field(pytree_node=False)
    loss_scale: LossScale | None = None


def create_state(cfg: ModelConfig, oc: OptimConfig, params, dtype=jnp.float32,
                 loss_scale: LossScale | None = None) -> TrainState:
    state = TrainState.create(apply_fn=GuppyLM(cfg, dtype).apply, params=params,
                              tx=make_optimizer(oc), lr_fn=lr_schedule(oc), loss_scale=loss_scale)
    # create() leaves step as the Python int 0; after one update it is an int32 array, and
    # that change of type would compile the jitted step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def apply_update(state: TrainState, grads, lr) -> TrainState:
    """Clip, Adam, weight decay (the chain), then params -= lr * update."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: jnp.asarray(-lr, u.dtype) * u, updates)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)


def batch_loss(apply_fn, params, batch, deterministic=True, dropout_rng=None):
    rngs = None if deterministic else {"dropout": dropout_rng}
    logits_BTV = apply_fn({"params": params}, batch["inputs"], batch.get("positions"),
                          batch.get("segment_ids"), deterministic=deterministic, rngs=rngs)
    return lm_loss(logits_BTV, batch["targets"], batch["loss_mask"])


def train_step(state: TrainState, batch: dict, rng: jax.Array, dropout: bool = True):
    """One AdamW update. Dropout keys are fold_in(rng, step): no key is carried in the state.
    With a loss scale (float16) the gradients come from the scaled loss, and a step whose
    gradients are not finite changes nothing but the step and the scale."""
    dropout_rng = jax.random.fold_in(rng, state.step)
    scaler = state.loss_scale

    def loss_fn(params):
        loss = batch_loss(state.apply_fn, params, batch, not dropout, dropout_rng)
        return (loss if scaler is None else loss * scaler.scale), loss

    (_, loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    lr = state.lr_fn(state.step)
    metrics = {"loss": loss, "lr": lr, "tokens": batch["loss_mask"].sum()}
    if scaler is None:
        metrics["grad_norm"] = optax.tree.norm(grads)
        return apply_update(state, grads, lr), metrics
    grads = jax.tree_util.tree_map(lambda g: g / scaler.scale, grads)
    finite = jnp.all(jnp.array([jnp.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)]))
    applied, skipped = apply_update(state, grads, lr), state.replace(step=state.step + 1)
    new_state = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), applied, skipped)
    metrics.update(grad_norm=optax.tree.norm(grads), loss_scale=scaler.scale, skipped=~finite)
    return new_state.replace(loss_scale=scaler.after(finite)), metrics


def eval_step(apply_fn, params, batch: dict):
    """Summed loss and target count, so means over many batches weight every token alike.
    Needs only the params: no optimizer, no TrainState."""
    logits_BTV = apply_fn({"params": params}, batch["inputs"], batch.get("positions"),
                          batch.get("segment_ids"), deterministic=True)
    loss_sum, count = masked_ce_sum(logits_BTV, batch["targets"], batch["loss_mask"])
    return {"loss_sum": loss_sum, "tokens": count}


def train_steps(state: TrainState, batches: dict, rng: jax.Array, dropout: bool = True):
    """k updates in one call: `batches` holds k stacked batches (k, B, T). A lax.scan over
    train_step, so one dispatch and one compiled program serve k steps; metrics come back
    stacked (k,). Same results as k calls of train_step."""
    def body(s, batch):
        return train_step(s, batch, rng, dropout)
    return jax.lax.scan(body, state, batches)


def jit_counting_traces(fn, **jit_kwargs):
    """jax.jit(fn), plus `.traces()`: how many times JAX has traced fn so far. JAX traces a
    jitted function once for each new shape or dtype of its arguments, and each trace makes
    one compiled program, so this counts the caller's compilations with public means."""
    count = 0

    def traced(*args, **kwargs):
        nonlocal count
        count += 1  # Python code in a jitted function runs only while JAX traces it
        return fn(*args, **kwargs)
    jitted = jax.jit(traced, **jit_kwargs)
    jitted.traces = lambda: count
    return jitted


# Donating the state lets XLA write the new state into the old one's buffers (one copy of it
# in memory, not two). Not before jax 0.8: with jax 0.7.2 (Colab's) on XLA:CPU, two donated 9M
# steps run back to back computed another update than undonated ones (a loss of 8.405626 for
# 8.399631; tests/test_steps.py); 0.4.35 and 0.10.2 agree bit for bit. Unchecked on GPUs.
DONATION_IS_SAFE = jax.__version_info__ >= (0, 8)


def make_train_step(steps_per_call: int = 1, dropout: bool = True, donate: bool | None = None):
    """`train_step` (or `train_steps` over k stacked batches) jitted as fn(state, batch, rng).

    The state is donated (where DONATION_IS_SAFE, or as `donate` says): its buffers are
    reused for the new state, so the caller must use only what comes back. Each call makes
    a fresh function, so `fn.traces()` counts this caller's compilations alone.
    """
    def step(state, batch, rng):
        if steps_per_call == 1:
            return train_step(state, batch, rng, dropout)
        return train_steps(state, batch, rng, dropout)
    donate = DONATION_IS_SAFE if donate is None else donate
    return jit_counting_traces(step, donate_argnums=0 if donate else ())


def make_eval_step(apply_fn):
    """`eval_step` jitted as fn(params, batch), with its own `traces()` count."""
    def step(params, batch):
        return eval_step(apply_fn, params, batch)
    return jit_counting_traces(step)
