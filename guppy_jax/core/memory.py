"""How much memory a job needs, checked before it starts.

A typo such as `--max-seq-len 100000` or `--vocab-size 100000000` should fail in a second
with the numbers, not after eating the machine. The estimates are rough upper bounds in
float32; they only need to tell "fits easily" from "cannot fit".
"""
from __future__ import annotations

from pathlib import Path

from .config import ConfigError, ModelConfig

GIB = 2**30
PREPARE_BYTES_PER_SAMPLE = 6_000  # measured: 60,000 samples peak at 334 MB, 6,000 at 68 MB
PREPARE_BASE_BYTES = 100 * 2**20


def available_bytes(device=None) -> int | None:
    """Memory a job can still take: the accelerator's limit for a GPU device, else the
    machine's available RAM (Linux /proc/meminfo); None when unknown."""
    if device is not None and getattr(device, "platform", "cpu") != "cpu":
        stats = device.memory_stats() or {}
        return stats.get("bytes_limit")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def train_bytes(cfg: ModelConfig, batch_size: int, seq_len: int) -> int:
    """A train step's memory: params, gradients and Adam's two moments (4 copies of every
    parameter), plus the activations the backward pass keeps (attention scores grow as T^2)."""
    B, T, D, F, H, V = batch_size, seq_len, cfg.d_model, cfg.ffn_hidden, cfg.n_heads, cfg.vocab_size
    per_layer = B * T * (12 * D + 3 * F) + 4 * B * H * T * T
    activations = cfg.n_layers * per_layer + 3 * B * T * V + 4 * B * T * D
    return 4 * (4 * cfg.num_params() + activations)


def check_fits(needed: int, what: str, fix: str, device=None) -> None:
    """ConfigError (a one-line refusal) when `needed` bytes exceed what is available."""
    have = available_bytes(device)
    if have is not None and needed > have:
        raise ConfigError(f"{what} needs about {needed / GIB:,.1f} GiB of memory, but only "
                          f"{have / GIB:,.1f} GiB are available: {fix}")


def check_train_fits(cfg: ModelConfig, batch_size: int, seq_len: int, device=None) -> None:
    check_fits(train_bytes(cfg, batch_size, seq_len),
               f"training ({cfg.num_params():,} params, vocab {cfg.vocab_size}, batch {batch_size} x {seq_len})",
               "lower --batch-size, --max-seq-len, --vocab-size or the model size", device)


def check_prepare_fits(samples: int) -> None:
    check_fits(PREPARE_BASE_BYTES + samples * PREPARE_BYTES_PER_SAMPLE, f"generating {samples:,} samples",
               "ask for fewer --samples")


def is_out_of_memory(err: Exception) -> bool:
    """An allocation failure reported by XLA (a JaxRuntimeError whose status is
    RESOURCE_EXHAUSTED) or by the host."""
    text = str(err)
    return isinstance(err, MemoryError) or ("RESOURCE_EXHAUSTED" in text and "emory" in text)
