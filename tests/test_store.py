"""The token store: what prepare writes is what the tokenizer makes of each conversation, train
reads the same batches from it as from the JSONL, batches are laid out from lengths alone and
resume from a cursor, and the files are hashed again only when they changed."""
import json
import os
import shutil

import numpy as np
import pytest

from guppy_jax.core.config import PRESETS
from guppy_jax.core.tokenizer import load_tokenizer
from guppy_jax.data import datadir, owndata
from guppy_jax.data.batches import Batches, DataError, encode_texts, load_texts, take_rows
from guppy_jax.data.datadir import STORE_FILES, load_for_training, prepare
from guppy_jax.data.store import StoredSamples

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("store") / "data"
    prepare(out=out, samples=400, seed=3, vocab_size=TINY.model.vocab_size, quiet=True)
    return out


@pytest.mark.parametrize("max_len", [128, 16])
def test_the_store_holds_what_the_tokenizer_makes_of_each_conversation_cut_to_the_context(small, max_len):
    tok = load_tokenizer(small / "tokenizer.json")
    for split in ("train", "eval"):
        encoded = encode_texts(tok, load_texts(small / f"{split}.jsonl"), max_len)
        stored = StoredSamples(small, split, max_len)
        assert len(stored) == len(encoded.samples) > 0
        assert (stored.truncated, stored.dropped) == (encoded.truncated, encoded.dropped)
        assert all(np.array_equal(a, b) and a.dtype == np.int32 for a, b in zip(stored, encoded.samples))
    assert StoredSamples(small, "train", 16).truncated > 0  # the cut was exercised


def test_train_reads_the_same_batches_from_the_store_as_from_the_jsonl(small, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(small, legacy)
    for name in STORE_FILES:  # a directory prepared before there was a store
        (legacy / name).unlink()
    summary = json.loads((legacy / "summary.json").read_text())
    for key in ("files", "digest", "sizes"):
        summary.pop(key)
    (legacy / "summary.json").write_text(json.dumps(summary))
    for packing in (True, False):
        cfg = TINY.replace(batch_size=4, packing=packing)
        new, old = load_for_training(cfg, small, quiet=True), load_for_training(cfg, legacy, quiet=True)
        assert isinstance(new.train.samples, StoredSamples) and not isinstance(old.train.samples, StoredSamples)
        assert new.report == old.report and not new.notes and "no token store" in old.notes[0]
        for _ in range(30):
            a, b = next(new.train), next(old.train)
            assert all(np.array_equal(a[k], b[k]) for k in a)
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(new.eval.one_pass(), old.eval.one_pass()) for k in a)


def plain_greedy(lengths, order, seq_len):
    """The packing rule, written the obvious way over a whole epoch."""
    rows, row, used = [], [], 0
    for i in order:
        if row and used + lengths[i] > seq_len:
            rows.append(row)
            row, used = [], 0
        row.append(int(i))
        used += lengths[i]
    return rows + ([row] if row else [])


def test_rows_taken_a_batch_at_a_time_are_the_rows_of_packing_the_whole_epoch():
    rs = np.random.RandomState(0)
    lengths = rs.randint(2, 150, 500)
    order = rs.permutation(500)
    whole = plain_greedy(lengths, order, 128)
    taken, cursor = [], 0
    while cursor < len(order):
        rows, cursor = take_rows(lengths, order, cursor, 7, 128, packed=True)
        taken += rows
    assert taken == whole
    assert take_rows(lengths, order, 0, 3, 128, packed=False) == ([[order[0]], [order[1]], [order[2]]], 3)


def test_a_position_resumes_from_its_cursor_and_one_saved_before_cursors_by_replaying(small):
    samples = StoredSamples(small, "train", 128)
    run = Batches(samples, 8, 128, packed=True, seed=1)
    for _ in range(run.batches_per_epoch() + 3):  # into the second epoch
        next(run)
    saved = run.position
    assert saved["epoch"] == 1 and saved["cursor"] > 0
    expected = [next(run) for _ in range(5)]
    for position in (saved, {"epoch": saved["epoch"], "index": saved["index"]}):
        resumed = Batches(samples, 8, 128, packed=True, seed=1)
        resumed.seek(position)
        for want in expected:
            got = next(resumed)
            assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_process_fills_only_the_rows_its_devices_hold(small, monkeypatch):
    samples = StoredSamples(small, "train", 128)
    read = []
    monkeypatch.setattr(StoredSamples, "__getitem__", lambda self, i: read.append(i) or samples.tokens[:3].astype(np.int32))
    whole = next(Batches(samples, 8, 128, packed=False, seed=1))
    read.clear()
    part = next(Batches(samples, 8, 128, packed=False, seed=1, rows=slice(4, 8)))
    assert len(read) == 4  # the other four rows' tokens were never read
    assert np.array_equal(part["inputs"][4:], whole["inputs"][4:]) and not part["segment_ids"][:4].any()


def test_files_are_hashed_again_only_when_one_changed_size_or_is_newer_than_the_summary(small, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(small, data, copy_function=shutil.copy2)  # times kept
    hashed = []
    real = datadir.file_digest
    monkeypatch.setattr(datadir, "file_digest", lambda path: hashed.append(os.path.basename(path)) or real(path))
    assert datadir.checked_digest(data) == json.loads((data / "summary.json").read_text())["digest"]
    assert hashed == []
    tokens = data / "train.tokens"
    flipped = bytearray(tokens.read_bytes())
    flipped[10] ^= 1
    tokens.write_bytes(bytes(flipped))  # the same size, newer than summary.json
    with pytest.raises(DataError, match="train.tokens is not what its summary.json was written with"):
        datadir.checked_digest(data)
    assert "train.tokens" in hashed


def test_a_disk_without_room_for_the_output_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps({"input": f"hi {i}", "output": f"blub {i}"}) + "\n" for i in range(50)))
    monkeypatch.setattr(owndata.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DataError, match=r"its disk has 0.00 GiB free .*free some space or choose an --out"):
        owndata.prepare_from(src, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl"]
