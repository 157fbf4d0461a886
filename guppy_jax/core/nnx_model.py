"""GuppyLM in Flax NNX: the model of model.py (Flax Linen), written the NNX way.

Linen and NNX, for a learner. In Linen a Module is a description: `init` returns the
parameters as a separate pytree, and `apply(params, x)` is a pure function of them;
nothing lives on the module object. In NNX a Module is an ordinary Python object that
holds its state: layers are built eagerly in `__init__` (random init from an
`nnx.Rngs`), parameters are `nnx.Param` attributes, and a call may update the object in
place (here only the decode cache, `nnx.Cache`). `nnx.jit` and `nnx.value_and_grad`
take such objects and carry their updates out of the transform. For plain JAX,
`nnx.split(model)` gives (graphdef, state): the state is a pytree of arrays, like
Linen's params, and `nnx.merge(graphdef, state)` builds the object back.

Read it beside model.py and reference_torch/model.py: the same sections (Attention, FFN,
Block, GuppyLM), shape suffixes and computation (mixed precision included). The
attribute names are Linen's (tok_emb, blocks_0, attn.qkv, ...), so `nnx.state(model,
nnx.Param)` has exactly the paths of Linen's params and conversion is a copy
(`linen_to_nnx`, `nnx_to_linen`).

Left out of model.py, on purpose: its "Speed-ups" section (norm_input's gradient fence,
the (B*H, S, K) cache buffers and einsum_bh), written for XLA:CPU's speed. The cache here
keeps the reference's (B, H, S, K). The forward pass is the same to the bit either way;
the fence changes Linen's gradients by float32 rounding (XLA adds the residual stream's
gradient terms in another order), and with it off the two models' gradients and 50
training steps agree bit for bit (parity_tests/nnx_measure.py).

Dropout keys come from an `nnx.Rngs` given to the call (as Linen's `rngs={"dropout":
key}`), not one stored in the model, so the model's state is its parameters alone (plus
the cache while decoding). Intermediates come back through a `seen` dict, as in the
reference: `nnx.sow` would store them in the model on every call, training included.

Flax 0.10 to 0.12, by feature checks rather than version numbers: `_write` (assigning a
Variable: 0.12 deprecates `.value`, 0.10 has only it), `_to_pure_dict` and
`_replace_by_pure_dict` (functions in nnx since 0.11, which deprecates the State methods
0.10 has), and `_optimizer_update` (`update(model, grads)` since 0.11, `update(grads)`
in 0.10, whose Optimizer holds the model).
"""
from __future__ import annotations

import inspect
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import steps
from .config import ModelConfig, OptimConfig
from .generate import left_pad, sample_logits

normal_init = nnx.initializers.normal(stddev=0.02)  # every weight N(0, 0.02); biases zero


def dense(n_in: int, n_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, kernel_init=normal_init, bias_init=nnx.initializers.zeros,
                      dtype=dtype, rngs=rngs)


def layer_norm(d: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # PyTorch's LayerNorm: eps 1e-5, variance as mean((x - mean)^2); float32 (the stream's dtype)
    return nnx.LayerNorm(d, epsilon=1e-5, use_fast_variance=False, rngs=rngs)


def _write(variable: nnx.Variable, value) -> None:
    """`variable[...] = value` in any flax: 0.12 deprecates `.value =` (set_value is its
    spelling); 0.10 has no set_value, and its `[...] =` writes into the immutable array."""
    if hasattr(variable, "set_value"):
        variable.set_value(value)
    else:
        variable.value = value


# ----------------------------------------------------------------------------- Attention
class KVCache(nnx.Module):
    """One Attention layer's decoding cache: keys, values and segment ids of every slot
    written so far (S = max_seq_len slots), and the next slot to write."""

    def __init__(self, cfg: ModelConfig, batch_size: int, dtype):
        B, H, S, K = batch_size, cfg.n_heads, cfg.max_seq_len, cfg.head_dim
        self.k = nnx.Cache(jnp.zeros((B, H, S, K), dtype))
        self.v = nnx.Cache(jnp.zeros((B, H, S, K), dtype))
        self.segment_ids = nnx.Cache(jnp.zeros((B, S), jnp.int32))
        self.index = nnx.Cache(jnp.array(0, jnp.int32))

    def __call__(self, k_BHTK, v_BHTK, segment_ids_BT):
        """Write this step's T positions at the index; return the whole buffers and the slot
        of the first new position."""
        start = self.index[...]
        _write(self.k, jax.lax.dynamic_update_slice(self.k[...], k_BHTK, (0, 0, start, 0)))
        _write(self.v, jax.lax.dynamic_update_slice(self.v[...], v_BHTK, (0, 0, start, 0)))
        _write(self.segment_ids, jax.lax.dynamic_update_slice(
            self.segment_ids[...], segment_ids_BT.astype(jnp.int32), (0, start)))
        _write(self.index, start + k_BHTK.shape[2])
        return self.k[...], self.v[...], self.segment_ids[...], start


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.cfg, self.dtype = cfg, dtype
        self.qkv = dense(cfg.d_model, 3 * cfg.d_model, dtype, rngs)
        self.out = dense(cfg.d_model, cfg.d_model, dtype, rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        # self.cache, a KVCache, exists from GuppyLM.init_cache to clear_cache only

    def __call__(self, x_BTD, segment_ids_BT, deterministic=True, rngs=None, decode=False, seen=None):
        B, T, D = x_BTD.shape
        H, K = self.cfg.n_heads, self.cfg.head_dim
        qkv_BT3HK = self.qkv(x_BTD).reshape(B, T, 3, H, K)
        q_BHTK, k_BHSK, v_BHSK = qkv_BT3HK.transpose(2, 0, 3, 1, 4)
        q_slot_T, seg_k_BS = jnp.arange(T), segment_ids_BT
        if decode:  # attend over every cached slot; this step's queries sit at start..start+T-1
            if not hasattr(self, "cache"):
                raise ValueError("decode=True needs a cache: call model.init_cache(batch_size) first")
            k_BHSK, v_BHSK, seg_k_BS, start = self.cache(k_BHSK, v_BHSK, segment_ids_BT)
            q_slot_T = start + q_slot_T
        S = k_BHSK.shape[2]

        scores_BHTS = jnp.einsum("bhtk,bhsk->bhts", q_BHTK, k_BHSK) / math.sqrt(K)
        causal_TS = jnp.arange(S)[None, :] <= q_slot_T[:, None]
        same_seg_BTS = segment_ids_BT[:, :, None] == seg_k_BS[:, None, :]
        mask_BHTS = (causal_TS[None] & same_seg_BTS)[:, None]
        softmax_dtype = jnp.promote_types(self.dtype, jnp.float32)  # never softmax in half precision
        scores_BHTS = jnp.where(mask_BHTS, scores_BHTS.astype(softmax_dtype), -jnp.inf)
        probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1)
        if seen is not None:
            seen["attn_probs"] = probs_BHTS
        probs_BHTS = self.dropout(probs_BHTS, deterministic=deterministic, rngs=rngs)

        y_BHTK = jnp.einsum("bhts,bhsk->bhtk", probs_BHTS.astype(v_BHSK.dtype), v_BHSK)
        out_BTD = self.out(y_BHTK.transpose(0, 2, 1, 3).reshape(B, T, D))
        if seen is not None:
            seen["attn_out"] = out_BTD
        return out_BTD


# ----------------------------------------------------------------------------- FFN
class FFN(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.up = dense(cfg.d_model, cfg.ffn_hidden, dtype, rngs)
        self.down = dense(cfg.ffn_hidden, cfg.d_model, dtype, rngs)
        self.dropout = nnx.Dropout(cfg.dropout)

    def __call__(self, x_BTD, deterministic=True, rngs=None):
        h_BTF = jax.nn.relu(self.up(x_BTD))
        return self.dropout(self.down(h_BTF), deterministic=deterministic, rngs=rngs)


# ----------------------------------------------------------------------------- Block
class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.norm1 = layer_norm(cfg.d_model, rngs)
        self.attn = Attention(cfg, dtype, rngs=rngs)
        self.norm2 = layer_norm(cfg.d_model, rngs)
        self.ffn = FFN(cfg, dtype, rngs=rngs)

    def __call__(self, x_BTD, segment_ids_BT, deterministic=True, rngs=None, decode=False, seen=None):
        x_BTD = x_BTD + self.attn(self.norm1(x_BTD), segment_ids_BT, deterministic, rngs, decode, seen)
        x_BTD = x_BTD + self.ffn(self.norm2(x_BTD), deterministic, rngs)
        if seen is not None:
            seen["block_out"] = x_BTD
        return x_BTD


# ----------------------------------------------------------------------------- GuppyLM
class GuppyLM(nnx.Module):
    """`GuppyLM(cfg, dtype, rngs=nnx.Rngs(0))` builds (and initialises) the model;
    `model(tokens_BT, ...)` is the forward pass, with model.py's arguments."""

    def __init__(self, cfg: ModelConfig, dtype=jnp.float32, *, rngs: nnx.Rngs):
        self.cfg, self.dtype = cfg, dtype  # dtype: of the matmuls; params stay float32
        self.tok_emb = nnx.Embed(cfg.vocab_size, cfg.d_model, embedding_init=normal_init, rngs=rngs)
        self.pos_emb = nnx.Embed(cfg.max_seq_len, cfg.d_model, embedding_init=normal_init, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout)
        for i in range(cfg.n_layers):  # Linen's names, so that the state's paths are Linen's
            setattr(self, f"blocks_{i}", Block(cfg, dtype, rngs=rngs))
        self.norm = layer_norm(cfg.d_model, rngs)

    @property
    def blocks(self) -> list[Block]:
        return [getattr(self, f"blocks_{i}") for i in range(self.cfg.n_layers)]

    def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None, deterministic: bool = True,
                 rngs: nnx.Rngs | None = None, decode: bool = False, seen: dict | None = None):
        """Logits (B, T, V). Dropout needs deterministic=False and rngs=nnx.Rngs(dropout=key).
        decode=True continues the cache (see init_cache). `seen`, a dict, receives every
        layer's attn_probs, attn_out and block_out under the reference's names."""
        B, T = tokens_BT.shape
        if positions_BT is None:
            if decode:
                raise ValueError("decode=True needs explicit positions_BT (the cache slot of each token)")
            positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((B, T), jnp.int32)

        x_BTD = self.tok_emb(tokens_BT) + self.pos_emb(positions_BT)
        x_BTD = self.dropout(x_BTD, deterministic=deterministic, rngs=rngs)
        for i, block in enumerate(self.blocks):
            found = {} if seen is not None else None
            x_BTD = block(x_BTD, segment_ids_BT, deterministic, rngs, decode, found)
            if found:
                seen.update({f"blocks.{i}.{name}": value for name, value in found.items()})
        x_BTD = self.norm(x_BTD)
        # tied head: x @ tok_emb.T, no bias, a matmul like the others (in self.dtype)
        logits_BTV = jnp.dot(x_BTD.astype(self.dtype), self.tok_emb.embedding[...].astype(self.dtype).T)
        return logits_BTV.astype(jnp.promote_types(self.dtype, jnp.float32))

    def init_cache(self, batch_size: int) -> None:
        """An empty (all-zero) decode cache of max_seq_len slots in every layer."""
        for block in self.blocks:
            block.attn.cache = KVCache(self.cfg, batch_size, self.dtype)

    def clear_cache(self) -> None:
        for block in self.blocks:
            if hasattr(block.attn, "cache"):
                del block.attn.cache


def forward_with_intermediates(model: GuppyLM, tokens_BT, **kwargs):
    """(logits_BTV, {"blocks.{i}.attn_probs" | "attn_out" | "block_out": ...}), as
    model.forward_with_intermediates returns them for the Linen model."""
    seen: dict = {}
    logits_BTV = model(tokens_BT, seen=seen, **kwargs)
    return logits_BTV, seen


# ----------------------------------------------------------------------------- Linen params <-> NNX
def _flat(tree, prefix=()) -> dict:
    flat = {}
    for name, value in tree.items():
        if hasattr(value, "items"):
            flat.update(_flat(value, prefix + (str(name),)))
        else:
            flat["/".join(prefix + (str(name),))] = value
    return flat


def linen_to_nnx(params: dict, cfg: ModelConfig, dtype=jnp.float32) -> GuppyLM:
    """An NNX GuppyLM holding a copy of these Linen params (numpy or jax arrays, any float
    dtype, kept). The paths must match exactly: the same names, shapes and count."""
    abstract = nnx.eval_shape(lambda: GuppyLM(cfg, dtype, rngs=nnx.Rngs(0)))  # shapes only, no init
    graphdef, state = nnx.split(abstract)
    want = {path: tuple(leaf.shape) for path, leaf in _flat(_to_pure_dict(state)).items()}
    got = {path: tuple(np.shape(leaf)) for path, leaf in _flat(params).items()}
    if want != got:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        shapes = [f"{p}: {got[p]} (want {want[p]})" for p in sorted(set(want) & set(got)) if want[p] != got[p]]
        raise ValueError(f"Linen params do not fit {cfg}: missing {missing}, unexpected {extra}, shapes {shapes}")
    _replace_by_pure_dict(state, jax.tree_util.tree_map(jnp.array, params))  # jnp.array copies
    return nnx.merge(graphdef, state)


def nnx_to_linen(model: GuppyLM | nnx.State) -> dict:
    """The model's parameters as a Linen params pytree (nested dicts of copied jax arrays).
    Also takes a State of the same paths, such as the gradients from nnx.grad(...)(model)."""
    state = nnx.state(model, nnx.Param) if isinstance(model, nnx.Module) else model
    pure = _to_pure_dict(state)
    return jax.tree_util.tree_map(jnp.array, _plain(pure))


def _plain(tree):
    return {name: _plain(value) if hasattr(value, "items") else value for name, value in tree.items()}


def _to_pure_dict(state) -> dict:
    """The state as nested dicts of arrays. nnx.to_pure_dict since flax 0.11 (which
    deprecates the State method); 0.10 has only the method."""
    return nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()


def _replace_by_pure_dict(state, pure: dict) -> None:
    if hasattr(nnx, "replace_by_pure_dict"):
        nnx.replace_by_pure_dict(state, pure)
    else:
        state.replace_by_pure_dict(pure)


# ----------------------------------------------------------------------------- training
def make_optimizer(model: GuppyLM, oc: OptimConfig) -> nnx.Optimizer:
    """nnx.Optimizer over the model's nnx.Param, with steps.py's recipe: its chain (clip like
    torch, Adam, decoupled weight decay), then -lr(count) from the same schedule. Linen's
    apply_update takes the lr from its train step count instead: the same number here, where
    no step is ever skipped."""
    tx = optax.chain(steps.make_optimizer(oc), optax.scale_by_learning_rate(steps.lr_schedule(oc)))
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


_UPDATE_TAKES_MODEL = "model" in inspect.signature(nnx.Optimizer.update).parameters


def _optimizer_update(optimizer: nnx.Optimizer, model: GuppyLM, grads) -> None:
    if _UPDATE_TAKES_MODEL:  # flax >= 0.11
        optimizer.update(model, grads)
    else:  # flax 0.10: the optimizer holds the model
        optimizer.update(grads)


def batch_loss(model: GuppyLM, batch: dict, deterministic=True, rngs=None):
    logits_BTV = model(batch["inputs"], batch.get("positions"), batch.get("segment_ids"),
                       deterministic=deterministic, rngs=rngs)
    return steps.lm_loss(logits_BTV, batch["targets"], batch["loss_mask"])


def train_step(model: GuppyLM, optimizer: nnx.Optimizer, batch: dict, rng, dropout: bool = True) -> dict:
    """One AdamW update of `model`, in place; returns the metrics. Dropout keys come from
    fold_in(rng, step), as in steps.train_step."""
    dropout_key = jax.random.fold_in(rng, optimizer.step[...])

    def loss_fn(model):
        return batch_loss(model, batch, not dropout, nnx.Rngs(dropout=dropout_key))

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    _optimizer_update(optimizer, model, grads)
    return {"loss": loss, "grad_norm": optax.tree.norm(grads), "tokens": batch["loss_mask"].sum()}


def make_train_step(dropout: bool = True):
    """train_step under nnx.jit: fn(model, optimizer, batch, rng) -> metrics, updating the
    model and optimizer in place. nnx.jit walks both objects in Python on every call."""
    def step(model, optimizer, batch, rng):
        return train_step(model, optimizer, batch, rng, dropout)
    return nnx.jit(step)


def make_split_train_step(model: GuppyLM, optimizer: nnx.Optimizer, dropout: bool = True,
                          donate: bool | None = None):
    """The same step under plain jax.jit, on pure state: (step, state), with
    step(state, batch, rng) -> (state, metrics). The objects are split once here and merged
    inside the traced function only, so a call costs no Python walk of the model. With
    `donate` (by default where steps.DONATION_IS_SAFE) the state's buffers (the model's too)
    are reused for the new state, as in steps.make_train_step: keep only what comes back,
    and write it into the objects with nnx.update((model, optimizer), state)."""
    graphdef, state = nnx.split((model, optimizer))
    donate = steps.DONATION_IS_SAFE if donate is None else donate

    @partial(jax.jit, donate_argnums=0 if donate else ())
    def step(state, batch, rng):
        model, optimizer = nnx.merge(graphdef, state)
        metrics = train_step(model, optimizer, batch, rng, dropout)
        return nnx.state((model, optimizer)), metrics

    return step, state


# ----------------------------------------------------------------------------- generation
@nnx.jit
def decode_step(model: GuppyLM, tokens_BT, positions_BT, segment_ids_BT):
    """Logits for T new tokens, continuing the model's cache (model.init_cache first); the
    cache is updated in place, carried out of the jit by nnx.jit."""
    return model(tokens_BT, positions_BT, segment_ids_BT, decode=True)


def generate(model: GuppyLM, prompts: list[list[int]], rng=None, *, max_new_tokens=64, temperature=0.7,
             top_k=50, top_p=1.0, prompt_len=None) -> list[list[int]]:
    """generate.generate for the NNX model, as a Python loop over a jitted decode step: the
    same left-padded prompts, prefill, sampler and keys (fold_in(rng, i) for token i), so
    the same tokens. Returns each row's new tokens, up to and including eos."""
    cfg = model.cfg
    prompt_len = prompt_len or cfg.max_seq_len - max_new_tokens
    if prompt_len < 1 or prompt_len + max_new_tokens > cfg.max_seq_len:
        raise ValueError(f"prompt_len {prompt_len} + max_new_tokens {max_new_tokens} do not fit the "
                         f"{cfg.max_seq_len}-token context")
    tokens_BT, positions_BT, segments_BT = left_pad(prompts, prompt_len, cfg.pad_id)
    rng = jax.random.key(0) if rng is None else rng
    B = len(prompts)
    out_BN = np.full((B, max_new_tokens), cfg.pad_id, np.int32)
    done_B = np.zeros(B, bool)
    model.init_cache(B)
    try:
        logits_BV = decode_step(model, tokens_BT, positions_BT, segments_BT)[:, -1]
        for i in range(max_new_tokens):
            tok_B = np.asarray(sample_logits(logits_BV, jax.random.fold_in(rng, i), temperature, top_k, top_p))
            out_BN[:, i] = np.where(done_B, cfg.pad_id, tok_B)
            done_B |= out_BN[:, i] == cfg.eos_id
            if done_B.all() or i + 1 == max_new_tokens:
                break
            logits_BV = decode_step(model, out_BN[:, i:i + 1], positions_BT[:, -1:] + 1 + i,
                                np.ones((B, 1), np.int32))[:, 0]
    finally:
        model.clear_cache()
    rows = []
    for row in out_BN.tolist():
        rows.append(row[:row.index(cfg.eos_id) + 1] if cfg.eos_id in row else row)
    return rows
