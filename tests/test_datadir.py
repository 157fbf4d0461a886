"""Prepared data directories: the fill report, load-or-prepare, and loading for training."""
import numpy as np
import pytest

from guppy_jax.config import PRESETS
from guppy_jax.data import DataError
from guppy_jax.datadir import ensure_prepared, fill_shares, load_for_training


def test_fill_shares_count_real_tokens():
    samples = [np.ones(30, np.int32)] * 4 + [np.ones(70, np.int32)]
    shares = fill_shares(samples, seq_len=128)
    assert shares["padded"] == pytest.approx(190 / (5 * 128))
    assert shares["packed"] == pytest.approx(190 / (2 * 128))  # [30,30,30] then [30,70]


def test_a_missing_directory_other_than_the_default_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing data file .*train.jsonl.*guppy_jax.prepare --out"):
        ensure_prepared(tmp_path / "empty")
    (tmp_path / "empty" / "train.jsonl").write_text("{}\n")
    with pytest.raises(DataError, match="missing data file .*eval.jsonl"):
        ensure_prepared(tmp_path / "empty")


def test_load_for_training_gives_fixed_shape_batches(data_dir):
    cfg = PRESETS["tiny"]
    data = load_for_training(cfg, data_dir, quiet=True)
    batch = next(data.train)
    assert batch["inputs"].shape == (cfg.batch_size, cfg.model.max_seq_len)  # packed rows
    assert data.report["train_samples"] > data.report["eval_samples"] > 0
    padded = load_for_training(cfg.replace(packing=False), data_dir, quiet=True)
    assert padded.report["seq_len"] % 8 == 0 and padded.report["seq_len"] <= cfg.model.max_seq_len
    with pytest.raises(DataError, match="pass --vocab-size"):
        load_for_training(cfg.replace(model=cfg.model.replace(vocab_size=300)), data_dir, quiet=True)
