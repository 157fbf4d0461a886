"""Shared fixtures: one small prepared dataset and one tiny trained run for the session."""
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import jax
import pytest

from guppy_jax.cli import DEFAULT_PERSONA, REPO
from guppy_jax.core.config import PRESETS
from guppy_jax.data.datadir import prepare
from guppy_jax.data.persona import conversations, load_persona
from guppy_jax.core.tokenizer import format_chat, train_tokenizer
from guppy_jax.training.loop import TrainOptions, train
from guppy_jax.training.report import Reporter

TINY = PRESETS["tiny"]


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    data_dir: Path


@pytest.fixture(scope="session")
def records() -> list[dict]:
    """3,000 generated Guppy conversations ({"input", "output", "category"})."""
    return conversations(load_persona(DEFAULT_PERSONA), 3000, seed=0)


@pytest.fixture(scope="session")
def tok(records):
    """A tokenizer trained on those conversations."""
    return train_tokenizer(format_chat(r["input"], r["output"]) for r in records)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """1,500 Guppy conversations and a tokenizer that fits the tiny preset's vocab."""
    out = tmp_path_factory.mktemp("data")
    prepare(out=out, samples=1500, seed=0, vocab_size=TINY.model.vocab_size, quiet=True)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, data_dir) -> TrainedRun:
    """A finished tiny-preset run (30 steps) on that data."""
    out = tmp_path_factory.mktemp("run")
    train(TINY, TrainOptions(out=out, data_dir=data_dir, show_samples=False), Reporter(quiet=True))
    return TrainedRun(out, data_dir)


@pytest.fixture(autouse=True)
def default_matmul_precision():
    """Unit tests run at JAX's default matmul precision, as users do: the parity tests'
    "highest" must not leak into them."""
    assert jax.config.jax_default_matmul_precision is None, jax.config.jax_default_matmul_precision
    yield


@pytest.fixture
def script():
    """A loader of scripts/<name>.py as a module (the scripts are files, not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
