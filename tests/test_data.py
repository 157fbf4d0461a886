"""The three input formats, bad input, batch building and both batching modes."""
import json

import numpy as np
import pytest

from guppy_jax.data.batches import (Batches, DataError, encode_texts, load_texts, make_batch, non_pad_share,
                            shifted_batch, stack_batches)
from guppy_jax.core.tokenizer import format_chat


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_three_formats_give_the_same_sample(tmp_path):
    io = write(tmp_path / "a.jsonl", [json.dumps({"input": "hi", "output": "blub"})])
    text = write(tmp_path / "b.jsonl", [json.dumps({"text": format_chat("hi", "blub")})])
    chat = write(tmp_path / "c.jsonl", [json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                                  {"role": "assistant", "content": "blub"}]})])
    assert load_texts(io) == load_texts(text) == load_texts(chat) == [format_chat("hi", "blub")]


@pytest.mark.parametrize("line, reason", [
    ('{"input": "hi"', "not valid JSON"),
    ('{"input": "hi"}', "missing or non-string field 'output'"),
    ('{"output": 3, "input": "x"}', "missing or non-string field 'output'"),
    ('{"text": ""}', "'text' must be a non-empty string"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"messages": [{"role": "user"}]}', "messages[0] needs string 'role' and 'content'"),
    ('{"prompt": "hi"}', "record has none of"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_lines_name_file_line_and_reason(tmp_path, line, reason):
    path = write(tmp_path / "d.jsonl", [json.dumps({"input": "ok", "output": "ok"}), line])
    with pytest.raises(DataError) as err:
        load_texts(path)
    assert f"{path}:2:" in str(err.value) and reason in str(err.value)


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no records"):
        load_texts(tmp_path / "e.jsonl")
    with pytest.raises(DataError, match="file not found"):
        load_texts(tmp_path / "missing.jsonl")


def test_long_samples_truncated_or_dropped_and_counted(tok):
    texts = [format_chat("hi", "blub " * 200), format_chat("hi", "blub")]
    kept = encode_texts(tok, texts, 32, "truncate")
    assert kept.truncated == 1 and len(kept.samples) == 2 and len(kept.samples[0]) == 32
    dropped = encode_texts(tok, texts, 32, "drop")
    assert dropped.dropped == 1 and len(dropped.samples) == 1


def test_make_batch_shifts_and_masks():
    a, b = np.array([1, 5, 6, 2]), np.array([1, 7, 2])
    batch = make_batch([[a, b]], seq_len=10)
    np.testing.assert_array_equal(batch["inputs"][0], [1, 5, 6, 2, 1, 7, 2, 0, 0, 0])
    np.testing.assert_array_equal(batch["positions"][0], [0, 1, 2, 3, 0, 1, 2, 0, 0, 0])
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 2, 2, 2, 0, 0, 0])
    # a target is the next token of the same conversation; across the boundary and on pad: masked
    np.testing.assert_array_equal(batch["loss_mask"][0], [1, 1, 1, 0, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(batch["targets"][0], [5, 6, 2, 0, 7, 2, 0, 0, 0, 0])


@pytest.mark.parametrize("packed", [False, True])
def test_batches_fixed_shape_deterministic_resumable(tok, records, packed):
    samples = encode_texts(tok, [format_chat(r["input"], r["output"]) for r in records], 64).samples
    make = lambda: Batches(samples, batch_size=8, seq_len=64, packed=packed, seed=5)
    it = make()
    first = [next(it) for _ in range(it.batches_per_epoch() + 3)]  # crosses an epoch boundary
    assert {b["inputs"].shape for b in first} == {(8, 64)}
    assert all(set(b) == {"inputs", "targets", "loss_mask", "positions", "segment_ids"} for b in first)
    again = make()
    assert all(np.array_equal(x["inputs"], next(again)["inputs"]) for x in first)
    # resume from a saved position gives the very same next batches
    it2 = make()
    for _ in range(5):
        next(it2)
    saved = it2.position
    want = [next(it2)["inputs"] for _ in range(3)]
    resumed = make()
    resumed.seek(saved)
    assert all(np.array_equal(w, next(resumed)["inputs"]) for w in want)
    rows_per_batch = {b["segment_ids"].max(axis=1).max() for b in first}
    assert (max(rows_per_batch) > 1) == packed


def test_packing_fills_more_of_the_batch(tok, records):
    samples = encode_texts(tok, [format_chat(r["input"], r["output"]) for r in records], 128).samples
    padded = next(Batches(samples, 16, 128, packed=False))
    packed = next(Batches(samples, 16, 128, packed=True))
    assert non_pad_share(packed) > 0.8 > 0.4 > non_pad_share(padded)


def test_batch_larger_than_data_fails_early(tok):
    samples = encode_texts(tok, [format_chat("hi", "blub")] * 5, 32).samples
    with pytest.raises(DataError, match="batch size 8 is larger than the data"):
        Batches(samples, batch_size=8, seq_len=32, packed=False)


def test_shifted_batch_pads_right_and_masks_pad_targets():
    batch = shifted_batch([np.array([1, 5, 6, 2]), np.array([1, 7])], width=5)
    np.testing.assert_array_equal(batch["inputs"], [[1, 5, 6, 2], [1, 7, 0, 0]])
    np.testing.assert_array_equal(batch["targets"], [[5, 6, 2, 0], [7, 0, 0, 0]])
    np.testing.assert_array_equal(batch["loss_mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
    assert batch["inputs"].dtype == np.int64


def test_stack_batches_adds_a_leading_axis_in_order():
    batches = [make_batch([[np.array([1, k, 2])]], seq_len=4) for k in (5, 6, 7)]
    stacked = stack_batches(batches)
    assert set(stacked) == set(batches[0]) and stacked["inputs"].shape == (3, 1, 4)
    assert stacked["inputs"][:, 0, 1].tolist() == [5, 6, 7]
