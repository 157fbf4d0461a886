"""PyTorch state dict <-> Flax params for GuppyLM, both ways, for any ModelConfig.

The state dict side uses the original GuppyLM key names. Values may be torch
tensors or numpy arrays; what comes back is numpy (float32), so this module
needs no torch. Linear weights are stored (out, in) in PyTorch and (in, out) as
Flax kernels, so they are transposed; everything else is copied as is, which
makes a round trip bit-exact. `lm_head.weight` is the tied token embedding.
"""
from __future__ import annotations

import numpy as np

from ..core.config import ModelConfig

TIED_HEAD_KEY = "lm_head.weight"


class WeightsError(ValueError):
    """Weights that do not fit the model config: missing, extra, or misshapen tensors."""


def key_map(cfg: ModelConfig) -> list[tuple[str, tuple[str, ...], bool, tuple[int, ...]]]:
    """(state-dict key, Flax param path, transposed?, PyTorch shape) for every tensor."""
    d, f, v = cfg.d_model, cfg.ffn_hidden, cfg.vocab_size
    rows = [("tok_emb.weight", ("tok_emb", "embedding"), False, (v, d)),
            ("pos_emb.weight", ("pos_emb", "embedding"), False, (cfg.max_seq_len, d))]
    linears = [("attn.qkv", 3 * d, d), ("attn.out", d, d), ("ffn.up", f, d), ("ffn.down", d, f)]
    for i in range(cfg.n_layers):
        t, fx = f"blocks.{i}", f"blocks_{i}"
        for norm in ("norm1", "norm2"):
            rows.append((f"{t}.{norm}.weight", (fx, norm, "scale"), False, (d,)))
            rows.append((f"{t}.{norm}.bias", (fx, norm, "bias"), False, (d,)))
        for name, n_out, n_in in linears:
            path = (fx, *name.split("."))
            rows.append((f"{t}.{name}.weight", (*path, "kernel"), True, (n_out, n_in)))
            rows.append((f"{t}.{name}.bias", (*path, "bias"), False, (n_out,)))
    rows.append(("norm.weight", ("norm", "scale"), False, (d,)))
    rows.append(("norm.bias", ("norm", "bias"), False, (d,)))
    return rows


def abstract_params(cfg: ModelConfig) -> dict:
    """The Flax params pytree's shapes and dtypes (jax.ShapeDtypeStruct leaves), computing
    nothing: what a checkpoint restore needs to know. Read off key_map rather than by tracing
    init (jax.eval_shape), which costs a start-up ~0.2 s and needs Flax;
    tests/test_model.py checks that the two agree."""
    import jax
    tree: dict = {}
    for _, path, transposed, torch_shape in key_map(cfg):
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jax.ShapeDtypeStruct(torch_shape[::-1] if transposed else torch_shape, np.float32)
    return tree


def _as_numpy(value) -> np.ndarray:
    """A float32 numpy copy: never a view of the caller's buffer (tensor.numpy() shares
    memory, so an in-place torch update would otherwise change the converted params)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.array(value, dtype=np.float32, copy=True)


def _check_keys(found: set, expected: set, what: str, cfg: ModelConfig):
    missing, extra = sorted(expected - found), sorted(found - expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
        if extra:
            parts.append(f"unexpected {len(extra)}: {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}")
        raise WeightsError(f"{what} do not match the model config "
                           f"(n_layers={cfg.n_layers}): " + "; ".join(parts))


def _check_shape(key: str, expected: tuple, found: tuple, cfg: ModelConfig):
    if tuple(found) != tuple(expected):
        raise WeightsError(f"{key}: expected shape {tuple(expected)}, found {tuple(found)} "
                           f"(model config: vocab_size={cfg.vocab_size}, max_seq_len={cfg.max_seq_len}, "
                           f"d_model={cfg.d_model}, ffn_hidden={cfg.ffn_hidden})")


def state_dict_to_params(state_dict: dict, cfg: ModelConfig) -> dict:
    """A GuppyLM PyTorch state dict -> a Flax params pytree (nested dicts of numpy arrays).

    `lm_head.weight` may be absent (it is the tied embedding); if present it must equal
    `tok_emb.weight`.
    """
    rows = key_map(cfg)
    expected = {key for key, *_ in rows}
    found = set(state_dict) - {TIED_HEAD_KEY}
    _check_keys(found, expected, "state-dict keys", cfg)
    params: dict = {}
    for key, path, transpose, shape in rows:
        value = _as_numpy(state_dict[key])
        _check_shape(key, shape, value.shape, cfg)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(value.T) if transpose else value
    if TIED_HEAD_KEY in state_dict:
        head = _as_numpy(state_dict[TIED_HEAD_KEY])
        _check_shape(TIED_HEAD_KEY, rows[0][3], head.shape, cfg)
        if not np.array_equal(head, params["tok_emb"]["embedding"]):
            raise WeightsError(f"{TIED_HEAD_KEY} differs from tok_emb.weight, but GuppyLM ties them")
    return params


def _flatten(tree: dict, prefix=()) -> dict:
    flat = {}
    for name, value in tree.items():
        if isinstance(value, dict) or hasattr(value, "items"):
            flat.update(_flatten(value, prefix + (name,)))
        else:
            flat[prefix + (name,)] = value
    return flat


def params_to_state_dict(params: dict, cfg: ModelConfig, dtype=np.float32) -> dict:
    """A Flax params pytree -> a GuppyLM state dict of numpy arrays, `lm_head.weight` included."""
    rows = key_map(cfg)
    flat = _flatten(params)
    _check_keys({"/".join(p) for p in flat}, {"/".join(p) for _, p, _, _ in rows}, "params", cfg)
    state_dict = {}
    for key, path, transpose, shape in rows:
        value = np.asarray(flat[path], dtype=dtype)
        _check_shape("/".join(path), shape[::-1] if transpose else shape, value.shape, cfg)
        state_dict[key] = np.ascontiguousarray(value.T) if transpose else value.copy()
    state_dict[TIED_HEAD_KEY] = state_dict["tok_emb.weight"].copy()
    return state_dict


def to_torch(state_dict: dict) -> dict:
    """numpy state dict -> torch tensors (needs the `torch` extra)."""
    import torch
    return {key: torch.from_numpy(np.array(value)) for key, value in state_dict.items()}


def torch_model_from_params(params: dict, cfg: ModelConfig):
    """A `reference_torch` GuppyLM holding these Flax params (loaded strictly), in eval mode."""
    from reference_torch.model import GuppyLM
    model = GuppyLM(cfg)
    model.load_state_dict(to_torch(params_to_state_dict(params, cfg)), strict=True)
    return model.eval()
