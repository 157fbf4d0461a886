"""Model configuration shared by the Flax model and the PyTorch reference.

Pure Python on purpose: importing it pulls in neither JAX nor PyTorch.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# config.json key styles seen on GuppyLM checkpoints: its own names and the common hub names.
_HUB_NAMES = {
    "max_position_embeddings": "max_seq_len",
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "intermediate_size": "ffn_hidden",
    "hidden_dropout_prob": "dropout",
    "pad_token_id": "pad_id",
    "bos_token_id": "bos_id",
    "eos_token_id": "eos_id",
}


class ConfigError(ValueError):
    """A configuration that cannot describe a working model."""


@dataclass(frozen=True)
class ModelConfig:
    """GuppyLM's architecture. The defaults are the original 8,726,016-parameter model."""

    vocab_size: int = 4096
    max_seq_len: int = 128
    d_model: int = 384
    n_layers: int = 6
    n_heads: int = 6
    ffn_hidden: int = 768
    dropout: float = 0.1
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        for name in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "ffn_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"{name} must be a token id inside the vocab [0, {self.vocab_size}), got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_params(self) -> int:
        """Parameter count with the head tied to the token embedding."""
        d, f = self.d_model, self.ffn_hidden
        per_block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)
        return self.vocab_size * d + self.max_seq_len * d + self.n_layers * per_block + 2 * d

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        """Build from a config dict in either GuppyLM key style; unknown keys are ignored.

        Keys that are missing take the defaults; a key given in both styles must agree.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        values: dict = {}
        for key, value in raw.items():
            name = _HUB_NAMES.get(key, key)
            if name not in fields:
                continue
            if name in values and values[name] != value:
                raise ConfigError(f"config gives {name} twice with different values: "
                                  f"{values[name]!r} and {value!r} (from {key!r})")
            values[name] = value
        if "dropout" in values:
            values["dropout"] = float(values["dropout"])
        return cls(**values)


@dataclass(frozen=True)
class OptimConfig:
    """GuppyLM's optimizer recipe: AdamW with grad-norm clipping and warmup + cosine."""

    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 200
    steps: int = 10_000
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # on every parameter, biases and LayerNorms included
    grad_clip: float = 1.0

    def __post_init__(self):
        for name in ("lr", "min_lr", "beta1", "beta2", "eps", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if self.eps <= 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ConfigError(f"need lr > 0 and 0 <= min_lr <= lr, got lr={self.lr}, min_lr={self.min_lr}")
        if self.steps <= 0 or self.warmup_steps < 0:
            raise ConfigError(f"need steps > 0 and warmup_steps >= 0, got {self.steps}, {self.warmup_steps}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"betas must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.grad_clip <= 0 or self.weight_decay < 0:
            raise ConfigError(f"need grad_clip > 0 and weight_decay >= 0, got {self.grad_clip}, {self.weight_decay}")

    def replace(self, **changes) -> "OptimConfig":
        return dataclasses.replace(self, **changes)


# Model configs the parity tests compare on (random tokens, so the vocab can be small).
# Not training presets: those are PRESETS below, each with its own model ("tiny" there is
# a different, real-tokenizer-sized model from "micro" here).
PARITY_MODELS = {
    "guppy-9m": ModelConfig(),
    "micro": ModelConfig(vocab_size=256, max_seq_len=32, d_model=32, n_layers=2, n_heads=4,
                         ffn_hidden=64),
}


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the model, the optimizer and everything around the loop."""

    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    batch_size: int = _field(32, "rows per batch")
    packing: bool = _field(False, "pack several conversations per row (segment ids keep them apart)")
    seq_len: int = _field(0, "row length; 0: max_seq_len when packing, else the data's longest sample rounded up to 8")
    eval_every: int = _field(200, "evaluate on the held-out set every N steps")
    eval_batches: int = _field(50, "at most this many held-out batches per evaluation")
    checkpoint_every: int = _field(1000, "save a checkpoint every N steps (and always at the end)")
    keep_checkpoints: int = _field(3, "periodic checkpoints kept on disk (the best-eval one is kept apart)")
    seed: int = _field(42, "seed for init, data order and dropout")
    dtype: str = _field("auto", "compute dtype: auto (float32 on CPU; on a GPU bfloat16 if fast, else float16 "
                                "with loss scaling), float32, bfloat16 or float16; params stay float32")
    steps_per_call: int = _field(1, "train steps per jitted call (a lax.scan over stacked batches); a call "
                                    "ends early at an eval, a checkpoint or the last step (one more compile)")

    def __post_init__(self):
        for name in ("batch_size", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
                     "steps_per_call"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.seq_len == 0 or 2 <= self.seq_len <= self.model.max_seq_len):
            raise ConfigError(f"seq_len must be 0 (automatic) or in [2, max_seq_len={self.model.max_seq_len}] (a "
                              f"row of one token has nothing to predict), got {self.seq_len}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        raw = dict(raw)
        model, optim = ModelConfig.from_dict(raw.pop("model")), OptimConfig(**raw.pop("optim"))
        return cls(model=model, optim=optim, **raw)


PRESETS = {
    # GuppyLM's own recipe: 9M params, batch 32, 10,000 steps, one conversation per row.
    "guppy-9m": TrainConfig(steps_per_call=4),
    # Fits in 10 minutes on a 2-core laptop CPU: a narrower, shallower model (a 2,048-row
    # vocab halves the tied head), packed rows, a higher peak lr for the short schedule, and
    # short evaluations. 800 steps: with prompts written as people type them, fewer steps left
    # the held-out hit rate low, the capitals and typos most (BENCHMARKS.md, "How people type").
    "cpu": TrainConfig(
        model=ModelConfig(vocab_size=2048, d_model=192, n_layers=4, n_heads=4, ffn_hidden=384),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=100, steps=800),
        batch_size=32, packing=True, eval_every=200, eval_batches=10, checkpoint_every=200,
        steps_per_call=4),
    # Seconds, for tests.
    "tiny": TrainConfig(
        model=ModelConfig(vocab_size=2048, max_seq_len=64, d_model=32, n_layers=2, n_heads=4, ffn_hidden=64),
        optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=5, steps=30),
        batch_size=8, packing=True, eval_every=10, eval_batches=2, checkpoint_every=10, keep_checkpoints=2),
}
