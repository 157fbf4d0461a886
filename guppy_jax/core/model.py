"""GuppyLM in Flax Linen: a pre-norm decoder-only transformer with a tied LM head.

Read it beside reference_torch/model.py: the sections come in the same order
(Attention, FFN, Block, GuppyLM) and compute the same thing. Parameters are plain
data (a pytree) made by `GuppyLM(cfg).init(...)`; the forward pass is the pure
function `GuppyLM(cfg).apply({'params': params}, tokens_BT, ...)`.

Mixed precision follows torch autocast: with dtype float16 or bfloat16 the matmuls (every
Dense, the attention einsums, the tied head) run in that dtype, while the embeddings, the
residual stream, LayerNorms, softmax and logits stay float32 (params are always float32).

Shape suffixes: B batch, T query length, S key length (T, or the cache size when
decoding), D d_model, H heads, K head dim, F ffn hidden, V vocab.

Optional extras beyond the original, all off by default:
- `positions_BT` / `segment_ids_BT`: several conversations packed in one row attend
  only within themselves (a query sees a key iff key slot <= query slot and both
  have the same segment id).
- `decode=True`: a fixed-size key/value cache in the 'cache' collection, so that
  generation costs one position per new token.
- intermediates: attention probabilities, attention outputs and block outputs are
  sown into the 'intermediates' collection (`mutable=['intermediates']`).

The last section, "Speed-ups", is where three names called above live: `norm_input`,
`KVCache` and `einsum_bh`. Each computes what the one-line comment where it is called says,
in a form chosen for XLA:CPU's speed; skip that section on first reading.
"""
from __future__ import annotations

import contextlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import ModelConfig

normal_init = nn.initializers.normal(stddev=0.02)  # every weight N(0, 0.02); biases zero


def dense(features: int, name: str, dtype) -> nn.Dense:
    return nn.Dense(features, kernel_init=normal_init, bias_init=nn.initializers.zeros,
                    dtype=dtype, name=name)


def layer_norm(name: str):
    """PyTorch's LayerNorm, as a function of the residual stream x_BTD: eps 1e-5, variance as
    mean((x - mean)^2), not E[x^2] - E[x]^2, computed at the residual stream's precision, never
    in half (as under torch autocast)."""
    norm = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)
    return lambda x_BTD: norm(norm_input(x_BTD))  # norm_input(x) is x, with a gradient fence (Speed-ups)


# ----------------------------------------------------------------------------- Attention
class Attention(nn.Module):
    cfg: ModelConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD, segment_ids_BT, deterministic: bool, decode: bool = False):
        cfg = self.cfg
        B, T, D = x_BTD.shape
        H, K = cfg.n_heads, cfg.head_dim
        qkv_BT3D = dense(3 * D, "qkv", self.dtype)(x_BTD)  # split on D, not indexed: fewer copies
        q_BHTK, k_BHSK, v_BHSK = (a.reshape(B, T, H, K).transpose(0, 2, 1, 3)
                                  for a in jnp.split(qkv_BT3D, 3, axis=-1))
        q_slot_T, seg_k_BS = jnp.arange(T), segment_ids_BT
        if decode:  # attend over every cached slot; this step's queries sit at start..start+T-1
            # KVCache (Speed-ups) stores this step's keys and values, and returns every slot's
            k_BHSK, v_BHSK, seg_k_BS, start = KVCache(cfg.max_seq_len, name="cache")(
                k_BHSK, v_BHSK, segment_ids_BT)
            q_slot_T = start + q_slot_T
        S = k_BHSK.shape[2]

        # einsum_bh(spec, a, b, dtype): jnp.einsum(spec, a, b) in dtype, B and H merged for XLA:CPU (Speed-ups)
        scores_BHTS = einsum_bh("bhtk,bhsk->bhts", q_BHTK, k_BHSK, self.dtype) / math.sqrt(K)
        causal_TS = jnp.arange(S)[None, :] <= q_slot_T[:, None]
        same_seg_BTS = segment_ids_BT[:, :, None] == seg_k_BS[:, None, :]
        mask_BHTS = (causal_TS[None] & same_seg_BTS)[:, None]
        softmax_dtype = jnp.promote_types(self.dtype, jnp.float32)  # never softmax in half precision
        scores_BHTS = jnp.where(mask_BHTS, scores_BHTS.astype(softmax_dtype), -jnp.inf)
        probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1)
        self.sow("intermediates", "attn_probs", probs_BHTS)
        probs_BHTS = nn.Dropout(cfg.dropout)(probs_BHTS, deterministic=deterministic)

        y_BHTK = einsum_bh("bhts,bhsk->bhtk", probs_BHTS, v_BHSK, self.dtype)
        out_BTD = dense(D, "out", self.dtype)(y_BHTK.transpose(0, 2, 1, 3).reshape(B, T, D))
        self.sow("intermediates", "attn_out", out_BTD)
        return out_BTD


# ----------------------------------------------------------------------------- FFN
class FFN(nn.Module):
    cfg: ModelConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD, deterministic: bool):
        h_BTF = nn.relu(dense(self.cfg.ffn_hidden, "up", self.dtype)(x_BTD))
        out_BTD = dense(self.cfg.d_model, "down", self.dtype)(h_BTF)
        return nn.Dropout(self.cfg.dropout)(out_BTD, deterministic=deterministic)


# ----------------------------------------------------------------------------- Block
class Block(nn.Module):
    cfg: ModelConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_BTD, segment_ids_BT, deterministic: bool, decode: bool = False):
        h_BTD = layer_norm("norm1")(x_BTD)
        x_BTD = x_BTD + Attention(self.cfg, self.dtype, name="attn")(
            h_BTD, segment_ids_BT, deterministic, decode)
        h_BTD = layer_norm("norm2")(x_BTD)
        x_BTD = x_BTD + FFN(self.cfg, self.dtype, name="ffn")(h_BTD, deterministic)
        self.sow("intermediates", "block_out", x_BTD)
        return x_BTD


# ----------------------------------------------------------------------------- GuppyLM
class GuppyLM(nn.Module):
    cfg: ModelConfig
    dtype: jnp.dtype = jnp.float32  # matmul dtype; params, norms, softmax and the residual stay float32

    @nn.compact
    def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None,
                 deterministic: bool = True, decode: bool = False):
        cfg = self.cfg
        B, T = tokens_BT.shape
        if positions_BT is None:
            if decode:
                raise ValueError("decode=True needs explicit positions_BT (the cache slot of each token)")
            positions_BT = jnp.broadcast_to(jnp.arange(T), (B, T))
        if segment_ids_BT is None:
            segment_ids_BT = jnp.ones((B, T), jnp.int32)

        tok_emb = nn.Embed(cfg.vocab_size, cfg.d_model, embedding_init=normal_init, name="tok_emb")
        pos_emb = nn.Embed(cfg.max_seq_len, cfg.d_model, embedding_init=normal_init, name="pos_emb")
        x_BTD = tok_emb(tokens_BT) + pos_emb(positions_BT)
        x_BTD = nn.Dropout(cfg.dropout)(x_BTD, deterministic=deterministic)
        for i in range(cfg.n_layers):
            x_BTD = Block(cfg, self.dtype, name=f"blocks_{i}")(
                x_BTD, segment_ids_BT, deterministic, decode)
        x_BTD = layer_norm("norm")(x_BTD)
        # tied head: x @ tok_emb.T, no bias, a matmul like the others (in self.dtype)
        logits_BTV = jnp.dot(x_BTD.astype(self.dtype), tok_emb.embedding.astype(self.dtype).T)
        return logits_BTV.astype(jnp.promote_types(self.dtype, jnp.float32))


def init_params(cfg: ModelConfig, rng: jax.Array) -> dict:
    """A fresh params pytree: every weight N(0, 0.02), biases zero, LayerNorms (1, 0)."""
    dummy_BT = jnp.zeros((1, cfg.max_seq_len), jnp.int32)
    return GuppyLM(cfg).init(rng, dummy_BT)["params"]


def forward_with_intermediates(cfg: ModelConfig, params: dict, tokens_BT, dtype=jnp.float32, **kwargs):
    """Logits plus every layer's attention probs, attention output and block output.

    Returns (logits_BTV, {"blocks.{i}.attn_probs": ..., "blocks.{i}.attn_out": ...,
    "blocks.{i}.block_out": ...}), named like the PyTorch reference's intermediates.
    """
    logits_BTV, state = GuppyLM(cfg, dtype).apply({"params": params}, tokens_BT, mutable=["intermediates"],
                                           **kwargs)
    found = {}
    for i in range(cfg.n_layers):
        block = state["intermediates"][f"blocks_{i}"]
        found[f"blocks.{i}.attn_probs"] = block["attn"]["attn_probs"][0]
        found[f"blocks.{i}.attn_out"] = block["attn"]["attn_out"][0]
        found[f"blocks.{i}.block_out"] = block["block_out"][0]
    return logits_BTV, found


# ============================================================================= Speed-ups
# Skip on first reading. The model above is complete without this section's details: each
# name here computes what the comment where it is called says, written the way XLA:CPU ran
# fastest. How much each saved is in BENCHMARKS.md ("The train step, op by op"; "The decode
# cache's shape, and sampling"). PyTorch's eager reference needs none of them.

# False makes norm_input the plain identity everywhere; read when a function is traced
# (scripts/profile_step.py --without-fence times the train step both ways).
GRADIENT_FENCE = True


@contextlib.contextmanager
def gradient_fence(on: bool):
    """GRADIENT_FENCE set to `on` while the block runs, then put back: a function traced (or
    first called) inside it keeps that setting in its compiled program."""
    global GRADIENT_FENCE
    saved, GRADIENT_FENCE = GRADIENT_FENCE, on
    try:
        yield
    finally:
        GRADIENT_FENCE = saved


def norm_input(x_BTD):
    """x_BTD itself, where the residual stream enters a LayerNorm. On XLA:CPU (and while
    GRADIENT_FENCE is true) its gradient passes through `lax.optimization_barrier`, which XLA
    may not fuse across.

    Why: without the fence XLA:CPU fused each LayerNorm's backward with the transposing copy
    that the next weight-gradient matmul reads, into one slow loop over a dozen arrays in
    transposed order; with it the gradient is computed first and transposed by a plain copy
    after. The forward pass is untouched, and so are the values. Other backends were never
    measured with it, so they get the identity.
    """
    return _fenced(x_BTD) if GRADIENT_FENCE and jax.default_backend() == "cpu" else x_BTD


@jax.custom_vjp  # a custom rule, not a bare barrier: older jax cannot differentiate one
def _fenced(x):
    return x


def _fenced_bwd(_, g):
    return (jax.lax.optimization_barrier(g),)


_fenced.defvjp(lambda x: (x, None), _fenced_bwd)


class KVCache(nn.Module):
    """One Attention layer's decoding cache: the keys, values and segment ids of every slot
    written so far, in fixed buffers (S = max_len slots) of the 'cache' collection.

    Each call writes this step's T positions (keys and values (B, H, T, K), segment ids
    (B, T)) at the cache index and returns every slot's keys and values (B, H, S, K) and
    segment ids (B, S), plus the slot of the first new position (so queries know where they are).

    Why keys and values are stored as (B*H, S, K): that is the operand shape of the attention's
    batched matmuls (`einsum_bh`), so XLA updates the buffers in place, one slot per step.
    Stored in any other shape, XLA:CPU rewrote every buffer on every step.
    """
    max_len: int

    @nn.compact
    def __call__(self, k_BHTK, v_BHTK, segment_ids_BT):
        B, H, T, K = k_BHTK.shape
        Z, S = B * H, self.max_len
        k = self.variable("cache", "k", jnp.zeros, (Z, S, K), k_BHTK.dtype)
        v = self.variable("cache", "v", jnp.zeros, (Z, S, K), v_BHTK.dtype)
        seg = self.variable("cache", "segment_ids", jnp.zeros, (B, S), jnp.int32)
        index = self.variable("cache", "index", lambda: jnp.array(0, jnp.int32))
        start = index.value
        k.value = jax.lax.dynamic_update_slice(k.value, k_BHTK.reshape(Z, T, K), (0, start, 0))
        v.value = jax.lax.dynamic_update_slice(v.value, v_BHTK.reshape(Z, T, K), (0, start, 0))
        seg.value = jax.lax.dynamic_update_slice(seg.value, segment_ids_BT.astype(jnp.int32), (0, start))
        index.value = start + T
        return k.value.reshape(B, H, S, K), v.value.reshape(B, H, S, K), seg.value, start


def einsum_bh(spec: str, a, b, dtype):
    """`jnp.einsum(spec, a.astype(dtype), b.astype(dtype))` for a spec whose operands and
    result all begin with "bh", computed with B and H merged into one batch axis Z = B*H.

    Why: the decode cache keeps its buffers as (Z, S, K) (see KVCache), and a matmul over Z
    reads them as they are; over B and H, XLA:CPU copied them on every decode step. (Merged
    first, then cast: the other order made XLA:CPU's bfloat16 backward round once more.)
    """
    B, H = a.shape[:2]
    merged = lambda x: x.reshape(B * H, *x.shape[2:]).astype(dtype)  # noqa: E731
    out = jnp.einsum(spec.replace("bh", "z"), merged(a), merged(b))
    return out.reshape(B, H, *out.shape[1:])
