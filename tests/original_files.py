"""Checkpoints written the way the original GuppyLM writes them, for the tests that import them.

The original's `best_model.pt` is `{"step", "model_state_dict", "config", "eval_loss"}`, made by
torch.save from its model's state dict, in which `lm_head.weight` and `tok_emb.weight` are one
tensor (the head is tied to the embedding). The model here is reference_torch's GuppyLM, which
has the original's keys and ties its head the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from guppy_jax.core.config import ModelConfig
from reference_torch.model import GuppyLM


@dataclasses.dataclass
class OriginalStyleConfig:
    """A config object, not a dict: what a training script pickles when it saves its config
    class as it is. torch's weights-only loader refuses it."""

    vocab_size: int
    max_seq_len: int
    d_model: int
    n_layers: int
    n_heads: int
    ffn_hidden: int
    dropout: float = 0.1


def original_model(cfg: ModelConfig, seed: int = 0) -> GuppyLM:
    """The reference model with the original's init, its head tied to its token embedding."""
    torch.manual_seed(seed)
    return GuppyLM(cfg).eval()


def write_best_model(path, cfg: ModelConfig, config="dict", step: int = 1200, eval_loss: float = 1.25,
                     seed: int = 0) -> dict:
    """Write an original-layout best_model.pt and return its model_state_dict (tied tensors).
    `config`: "dict" (the model fields, tensor-only: weights_only loads it), "object" (an
    OriginalStyleConfig) or any other object to pickle as the config."""
    state_dict = original_model(cfg, seed).state_dict()
    assert state_dict["lm_head.weight"].data_ptr() == state_dict["tok_emb.weight"].data_ptr()
    if config == "dict":
        config = cfg.to_dict()
    elif config == "object":
        config = OriginalStyleConfig(cfg.vocab_size, cfg.max_seq_len, cfg.d_model, cfg.n_layers,
                                     cfg.n_heads, cfg.ffn_hidden, cfg.dropout)
    torch.save({"step": step, "model_state_dict": state_dict, "config": config, "eval_loss": eval_loss},
               Path(path))
    return state_dict
