"""GuppyLM in PyTorch: the minimal reference the Flax model is checked against.

Same computation and the same state-dict keys as the original GuppyLM, so its
checkpoints load with strict=True. Sections in the same order as guppy_jax/core/model.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from guppy_jax.core.config import ModelConfig


# ----------------------------------------------------------------------------- Attention
class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x_BTD, seen=None, cache=None):
        B, T, D = x_BTD.shape
        qkv = self.qkv(x_BTD).reshape(B, T, 3, self.n_heads, self.head_dim)
        q_BHTK, k_BHSK, v_BHSK = qkv.permute(2, 0, 3, 1, 4)
        if cache is not None:  # decoding: this layer's keys and values so far, grown in place
            if "k" in cache:
                k_BHSK = torch.cat([cache["k"], k_BHSK], dim=2)
                v_BHSK = torch.cat([cache["v"], v_BHSK], dim=2)
            cache["k"], cache["v"] = k_BHSK, v_BHSK
        S = k_BHSK.shape[2]  # the T queries are the last T of the S positions
        scores_BHTS = (q_BHTK @ k_BHSK.transpose(-2, -1)) / math.sqrt(self.head_dim)
        causal_TS = torch.ones(T, S, dtype=torch.bool, device=x_BTD.device).tril(diagonal=S - T)
        scores_BHTS = scores_BHTS.masked_fill(~causal_TS, float("-inf"))
        probs_BHTS = F.softmax(scores_BHTS, dim=-1)
        if seen is not None:
            seen["attn_probs"] = probs_BHTS
        y_BHTK = self.dropout(probs_BHTS) @ v_BHSK
        out_BTD = self.out(y_BHTK.transpose(1, 2).reshape(B, T, D))
        if seen is not None:
            seen["attn_out"] = out_BTD
        return out_BTD


# ----------------------------------------------------------------------------- FFN
class FFN(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.ffn_hidden)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x_BTD):
        return self.dropout(self.down(F.relu(self.up(x_BTD))))


# ----------------------------------------------------------------------------- Block
class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.ffn = FFN(cfg)

    def forward(self, x_BTD, seen=None, cache=None):
        x_BTD = x_BTD + self.attn(self.norm1(x_BTD), seen, cache)
        x_BTD = x_BTD + self.ffn(self.norm2(x_BTD))
        if seen is not None:
            seen["block_out"] = x_BTD
        return x_BTD


# ----------------------------------------------------------------------------- GuppyLM
class GuppyLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: both keys name one tensor
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens_BT, return_intermediates: bool = False, cache=None):
        """Logits (B, T, V). With `cache` (a list of one dict per layer, empty at first) the
        tokens continue the cached positions, and the cache grows by T in place."""
        B, T = tokens_BT.shape
        start = cache[0]["k"].shape[2] if cache and "k" in cache[0] else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        positions_T = torch.arange(start, start + T, device=tokens_BT.device)
        x_BTD = self.dropout(self.tok_emb(tokens_BT) + self.pos_emb(positions_T))
        found = {}
        for i, block in enumerate(self.blocks):
            seen = {} if return_intermediates else None
            x_BTD = block(x_BTD, seen, cache[i] if cache is not None else None)
            if seen:
                found.update({f"blocks.{i}.{name}": t for name, t in seen.items()})
        logits_BTV = self.lm_head(self.norm(x_BTD))
        return (logits_BTV, found) if return_intermediates else logits_BTV


def lm_loss(logits_BTV, targets_BT, mask_BT):
    """Mean cross-entropy over the targets where mask is true; 0 (not NaN) when none are."""
    ce_BT = F.cross_entropy(logits_BTV.flatten(0, 1), targets_BT.flatten(), reduction="none")
    mask_BT = mask_BT.to(ce_BT.dtype).flatten()
    return (ce_BT * mask_BT).sum() / mask_BT.sum().clamp(min=1.0)


@torch.no_grad()
def pick_next(logits_V, temperature: float, top_k: int, generator=None) -> int:
    """The original's sampling rule: greedy at temperature 0, else top-k then multinomial."""
    if temperature == 0:
        return int(logits_V.argmax())
    logits_V = logits_V / temperature
    if top_k:
        kth = torch.topk(logits_V, min(top_k, logits_V.numel())).values[-1]
        logits_V = logits_V.masked_fill(logits_V < kth, float("-inf"))
    return int(torch.multinomial(F.softmax(logits_V, -1), 1, generator=generator))


@torch.no_grad()
def generate(model: GuppyLM, prompt_ids: list[int], max_new_tokens: int = 64,
             temperature: float = 0.7, top_k: int = 50, eos_id: int = 2, generator=None):
    """The original's sampler: re-runs the whole (cropped) sequence for every new token.

    temperature 0 is greedy.
    """
    model.eval()
    ids = torch.tensor([prompt_ids], dtype=torch.long)
    for _ in range(max_new_tokens):
        logits_V = model(ids[:, -model.cfg.max_seq_len:])[0, -1]
        next_id = pick_next(logits_V, temperature, top_k, generator)
        ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
        if next_id == eos_id:
            break
    return ids[0, len(prompt_ids):].tolist()


@torch.no_grad()
def generate_cached(model: GuppyLM, prompt_ids: list[int], max_new_tokens: int = 64,
                    temperature: float = 0.7, top_k: int = 50, eos_id: int = 2, generator=None):
    """The same sampler with a key/value cache: the prompt runs once, then each new token
    costs one position. It stops where the context is full (the uncached sampler would
    slide its window instead), so the two agree whenever prompt + answer fit."""
    model.eval()
    cache = [{} for _ in model.blocks]
    logits_V = model(torch.tensor([prompt_ids], dtype=torch.long), cache=cache)[0, -1]
    out = []
    for i in range(max_new_tokens):
        out.append(pick_next(logits_V, temperature, top_k, generator))
        if out[-1] == eos_id or i == max_new_tokens - 1 or len(prompt_ids) + len(out) >= model.cfg.max_seq_len:
            break
        logits_V = model(torch.tensor([[out[-1]]]), cache=cache)[0, -1]
    return out
