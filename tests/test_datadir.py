"""Prepared data directories: the fill report, load-or-prepare, loading for training, the
digest that ties a directory's files together, and splits too small for a batch."""
import hashlib
import json
import shutil

import numpy as np
import pytest

from guppy_jax.cli import REPO
from guppy_jax.core.config import PRESETS
from guppy_jax.data.batches import DataError
from guppy_jax.data.datadir import ensure_prepared, fill_shares, load_for_training, prepare

MOCHI = REPO / "data" / "personas" / "mochi.toml"


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


def test_files_from_different_prepares_are_refused_with_the_directory_and_what_to_do(tmp_path, data_dir):
    mixed = tmp_path / "mixed"
    shutil.copytree(data_dir, mixed)
    prepare(MOCHI, tmp_path / "mochi", samples=300, quiet=True)
    shutil.copy(tmp_path / "mochi" / "train.jsonl", mixed / "train.jsonl")  # what a killed prepare used to leave
    with pytest.raises(DataError) as err:
        load_for_training(PRESETS["tiny"], mixed, quiet=True)
    assert str(err.value) == (f"{mixed}: its files come from different prepares (train.jsonl is not what its "
                              f"summary.json was written with): run prepare again to make {mixed} whole")


def test_training_data_carries_the_digests_and_old_directories_train_unchecked(tmp_path, data_dir):
    summary = json.loads((data_dir / "summary.json").read_text())
    tokenizer_digest = hashlib.sha256((data_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert summary["files"]["tokenizer.json"] == tokenizer_digest
    data = load_for_training(PRESETS["tiny"], data_dir, quiet=True)
    assert (data.digest, data.tokenizer_digest) == (summary["digest"], tokenizer_digest)
    old = tmp_path / "old"  # prepared before there were digests, then edited by hand
    shutil.copytree(data_dir, old)
    for key in ("digest", "files"):
        del summary[key]
    (old / "summary.json").write_text(json.dumps(summary))
    with open(old / "train.jsonl", "a") as f:
        f.write('{"input": "hi guppy", "output": "hello. i am a fish."}\n')
    data = load_for_training(PRESETS["tiny"], old, quiet=True)
    assert data.digest is None and data.tokenizer_digest == tokenizer_digest


@pytest.mark.parametrize("split_name, eval_fraction, packing, batch_size, advice", [
    ("eval", 0.02, True, 8, "a larger --eval-fraction, or more --samples or --from records"),
    ("train", 0.5, False, 32, "more --samples or --from records")])
def test_a_split_smaller_than_one_batch_says_which_how_many_samples_and_what_to_do(
        tmp_path, split_name, eval_fraction, packing, batch_size, advice):
    data_dir = tmp_path / "small"
    prepare(out=data_dir, samples=100 if split_name == "eval" else 40, eval_fraction=eval_fraction, quiet=True)
    samples = json.loads((data_dir / "summary.json").read_text())[split_name]
    cfg = PRESETS["tiny"].replace(batch_size=batch_size, packing=packing)
    with pytest.raises(DataError) as err:
        load_for_training(cfg, data_dir, quiet=True)
    message = str(err.value)
    assert message.startswith(f"{data_dir}: the {split_name} split has {samples} samples (")
    assert f"fewer than one batch of {batch_size}: pass --batch-size " in message
    assert message.endswith(f"or prepare more {split_name} data ({advice})")
    rows = int(message.split("pass --batch-size ")[1].split()[0])
    assert 0 < rows < batch_size
    load_for_training(cfg.replace(batch_size=rows), data_dir, quiet=True)  # the advice works
