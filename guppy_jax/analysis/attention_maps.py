"""Attention maps of one prompt, from the Flax model and from the PyTorch reference, same weights.

`inspect_prompt` runs the prompt through both frameworks (the reference gets the Flax params
through `convert_weights`), keeps every layer's and every head's attention probabilities,
their largest difference, and the next-token distribution at each position. The drawing is
`plots.plot_attention`; the command is `python -m guppy_jax.inspect`.

Shape suffixes as in model.py, plus L: layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from ..core.config import ModelConfig
from ..core.model import forward_with_intermediates, init_params

PARITY_TOL = 5e-5  # the parity tests' float32 tolerance on attention probabilities


class PromptError(ValueError):
    """A prompt the model cannot take: empty, or longer than its context."""


@dataclass
class AttentionMaps:
    ids: list[int]                 # the prompt's token ids, one per position
    labels: list[str]              # each token as text, for the axes
    jax_LHTT: np.ndarray           # attention probabilities, (layers, heads, query, key)
    torch_LHTT: np.ndarray | None  # the same from the reference (None without torch)
    probs_TV: np.ndarray           # next-token probabilities at each position: a float64 softmax
                                   # (numpy) of the Flax model's float32 logits

    @property
    def max_diff(self) -> float | None:
        """max |JAX - PyTorch| over every layer, head, query and key."""
        if self.torch_LHTT is None:
            return None
        return float(np.max(np.abs(self.jax_LHTT.astype(np.float64) - self.torch_LHTT)))


def check_prompt(ids: list[int], cfg: ModelConfig) -> None:
    if not ids:
        raise PromptError("the prompt is empty: give at least one token of text")
    if len(ids) > cfg.max_seq_len:
        raise PromptError(f"the prompt is {len(ids)} tokens, longer than the model's "
                          f"{cfg.max_seq_len}-token context: shorten it")
    if max(ids) >= cfg.vocab_size:
        raise PromptError(f"token id {max(ids)} is outside the model's vocab of {cfg.vocab_size}: "
                          f"the tokenizer does not belong to this model")


def jax_attention(cfg: ModelConfig, params, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(logits_TV, probs_LHTT) from the Flax model, at full float32 matmul precision."""
    tokens_1T = np.asarray([ids], np.int32)
    with jax.default_matmul_precision("highest"):  # no TF32 on GPUs: compare like with like
        logits_1TV, found = forward_with_intermediates(cfg, params, tokens_1T)
    probs_LHTT = np.stack([np.asarray(found[f"blocks.{i}.attn_probs"][0]) for i in range(cfg.n_layers)])
    return np.asarray(logits_1TV[0]), probs_LHTT


def torch_attention(cfg: ModelConfig, params, ids: list[int]) -> np.ndarray | None:
    """probs_LHTT from the PyTorch reference loaded with the same weights; None without torch."""
    try:
        import torch

        from ..export.convert_weights import torch_model_from_params
    except ImportError:
        return None
    model = torch_model_from_params(jax.device_get(params), cfg)
    with torch.no_grad():
        _, found = model(torch.tensor([ids], dtype=torch.long), return_intermediates=True)
    return np.stack([found[f"blocks.{i}.attn_probs"][0].numpy() for i in range(cfg.n_layers)])


def softmax_float64(logits_TV) -> np.ndarray:
    """softmax over the last axis, computed in numpy float64. Not jax.nn.softmax: with JAX's
    default (x64 off) it would compute in float32 whatever dtype it is given."""
    z_TV = np.asarray(logits_TV, np.float64)
    e_TV = np.exp(z_TV - z_TV.max(axis=-1, keepdims=True))
    return e_TV / e_TV.sum(axis=-1, keepdims=True)


def inspect_prompt(cfg: ModelConfig, params, ids: list[int], labels: list[str]) -> AttentionMaps:
    """Both frameworks' attention maps of one prompt, and the next-token probabilities."""
    check_prompt(ids, cfg)
    logits_TV, jax_LHTT = jax_attention(cfg, params, ids)
    return AttentionMaps(list(ids), list(labels), jax_LHTT, torch_attention(cfg, params, ids),
                         softmax_float64(logits_TV))


def top_candidates(probs_TV: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """For each position, the k likeliest next tokens as (id, probability), likeliest first."""
    order_Tk = np.argsort(-probs_TV, axis=-1, kind="stable")[:, :k]
    return [[(int(i), float(probs_TV[t, i])) for i in row] for t, row in enumerate(order_Tk)]


def token_labels(tok, ids: list[int]) -> list[str]:
    """Each id as readable text: specials by name, whitespace made visible."""
    labels = []
    for i in ids:
        text = tok.decode([i], skip_special_tokens=False)
        labels.append(text.replace("\n", "\\n").replace(" ", "\u00b7") or f"<{i}>")
    return labels


def load_weights(run_dir, data_dir, seed: int = 0, quiet: bool = False):
    """(ModelConfig, params, tokenizer, note) of a run; with no run there (no config.json),
    random guppy-9m weights and the data directory's tokenizer, and a note that says so."""
    from ..training.checkpoints import load_for_inference
    from ..core.tokenizer import load_tokenizer

    if (Path(run_dir) / "config.json").exists():
        cfg, params, tok = load_for_inference(run_dir)
        return cfg, params, tok, None
    from ..data.datadir import ensure_prepared
    cfg = ModelConfig()
    tok = load_tokenizer(ensure_prepared(data_dir, cfg.vocab_size, quiet=quiet))
    note = (f"no trained run in {run_dir}: using random guppy-9m weights (seed {seed}), so the maps "
            f"show an untrained model")
    return cfg, init_params(cfg, jax.random.key(seed)), tok, note
