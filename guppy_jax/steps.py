"""The pure training pieces: loss, optimizer, TrainState, train_step and eval_step.

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
    """Clip the global grad norm (as PyTorch does), then AdamW with decoupled weight decay on
    every parameter."""
    return optax.chain(
        clip_by_global_norm_like_torch(oc.grad_clip),
        optax.adamw(lr_schedule(oc), b1=oc.beta1, b2=oc.beta2, eps=oc.eps,
                    weight_decay=oc.weight_decay),
    )


class TrainState(train_state.TrainState):
    """step, params, opt_state; apply_fn, tx and lr_fn are static (not traced, not saved)."""

    lr_fn: Callable = struct.field(pytree_node=False)


def create_state(cfg: ModelConfig, oc: OptimConfig, params, dtype=jnp.float32) -> TrainState:
    state = TrainState.create(apply_fn=GuppyLM(cfg, dtype).apply, params=params,
                              tx=make_optimizer(oc), lr_fn=lr_schedule(oc))
    # create() leaves step as the Python int 0; after one update it is an int32 array, and
    # that change of type would compile the jitted step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def batch_loss(apply_fn, params, batch, deterministic=True, dropout_rng=None):
    rngs = None if deterministic else {"dropout": dropout_rng}
    logits_BTV = apply_fn({"params": params}, batch["inputs"], batch.get("positions"),
                          batch.get("segment_ids"), deterministic=deterministic, rngs=rngs)
    return lm_loss(logits_BTV, batch["targets"], batch["loss_mask"])


def train_step(state: TrainState, batch: dict, rng: jax.Array, dropout: bool = True):
    """One AdamW update. Dropout keys are fold_in(rng, step): no key is carried in the state."""
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        return batch_loss(state.apply_fn, params, batch, not dropout, dropout_rng)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    lr = state.lr_fn(state.step)  # optax's schedule count equals state.step
    new_state = state.apply_gradients(grads=grads)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": lr,
               "tokens": batch["loss_mask"].sum()}
    return new_state, metrics


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


def make_train_step(steps_per_call: int = 1, dropout: bool = True, donate: bool = True):
    """`train_step` (or `train_steps` over k stacked batches) jitted as fn(state, batch, rng).

    The state is donated: its buffers are reused for the new state, so the caller must
    use only what comes back. Each call makes a fresh function with its own compile
    cache, so `fn._cache_size()` counts this caller's compilations alone.
    """
    def step(state, batch, rng):
        if steps_per_call == 1:
            return train_step(state, batch, rng, dropout)
        return train_steps(state, batch, rng, dropout)
    return jax.jit(step, donate_argnums=0 if donate else ())


def make_eval_step(apply_fn):
    """`eval_step` jitted as fn(params, batch), with a fresh compile cache."""
    def step(params, batch):
        return eval_step(apply_fn, params, batch)
    return jax.jit(step)
