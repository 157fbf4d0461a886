"""Your own conversations -> a data directory: every record form, the published layouts, the
seeded split, the report's numbers, and bad lines named by file and line."""
import json
from pathlib import Path

import pytest

from guppy_jax.config import PRESETS
from guppy_jax.data import DataError
from guppy_jax.datadir import load_for_training
from guppy_jax.owndata import find_sources, hold_out, prepare_from
from guppy_jax.tokenizer import format_chat, load_tokenizer, reads_lowercase

ASKS = ["hello there", "are you hungry", "what do you see", "is the water warm", "do you sleep",
        "who is your friend", "what is that noise", "do you like the plant"]
SAYS = ["i see a bubble. it goes up.", "food is my favourite thing. always food.",
        "the water is warm near the heater.", "i sleep with my eyes open. fish do that.",
        "the snail is my friend. he is slow.", "a loud noise. i hide behind the rock.",
        "the plant tickles my fins.", "hello. i am swimming in circles."]


def conversations(n: int, start: int = 0) -> list[tuple[str, str, str]]:
    """n distinct (input, output, category) triples."""
    return [(f"{ASKS[i % 8]} number {i}", f"{SAYS[(i * 3) % 8]} {i} bubbles.", f"topic{i % 4}")
            for i in range(start, start + n)]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def original_text_records(convs):
    """The original GuppyLM's own files: the ChatML sample as "text", plus its category."""
    return [{"text": f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>", "category": c}
            for q, a, c in convs]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_originals_text_files_train_and_eval_as_given(tmp_path):
    src = tmp_path / "guppylm"
    write_jsonl(src / "train.jsonl", original_text_records(conversations(60)))
    write_jsonl(src / "eval.jsonl", original_text_records(conversations(6, start=60)))
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert lines(tmp_path / "out" / "train.jsonl") == original_text_records(conversations(60))
    assert lines(tmp_path / "out" / "eval.jsonl") == original_text_records(conversations(6, start=60))
    assert summary["train"]["samples"] == 60 and summary["eval"]["samples"] == 6
    assert summary["eval_split"] == "from eval.jsonl" and summary["per_category"]["topic0"] == 15
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    ids = tok.encode(original_text_records(conversations(1))[0]["text"]).ids
    assert ids[0] == 1 and ids[-1] == 2  # the ChatML markers are the special tokens, not text
    assert summary["reads_lowercase"] and reads_lowercase(tok)  # every answer here is lowercase


def test_answers_with_capitals_keep_a_tokenizer_that_reads_capitals(tmp_path):
    rows = [{"input": q, "output": a.capitalize(), "category": c} for q, a, c in conversations(40)]
    write_jsonl(tmp_path / "mine.jsonl", rows)
    summary = prepare_from(tmp_path / "mine.jsonl", tmp_path / "out", quiet=True)
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    assert not summary["reads_lowercase"] and not reads_lowercase(tok)
    assert tok.decode(tok.encode(format_chat("Hi", rows[0]["output"])).ids).endswith(rows[0]["output"])


def test_the_published_input_output_layout_with_test_and_validation_files(tmp_path):
    src = tmp_path / "hub"
    rows = [{"input": q, "output": a, "category": c} for q, a, c in conversations(50)]
    write_jsonl(src / "train.jsonl", rows)
    write_jsonl(src / "test.jsonl", rows[:3])
    summary = prepare_from(src, tmp_path / "a", quiet=True)
    assert summary["eval_split"] == "from test.jsonl" and lines(tmp_path / "a" / "eval.jsonl") == rows[:3]
    write_jsonl(src / "validation.jsonl", rows[3:8])
    sources = find_sources(src)
    assert [p.name for p in sources.eval] == ["validation.jsonl"] and [p.name for p in sources.ignored] == ["test.jsonl"]
    summary = prepare_from(src, tmp_path / "b", quiet=True)
    assert summary["eval"]["samples"] == 5 and summary["ignored_files"] == [str(src / "test.jsonl")]


def test_one_file_of_mixed_forms_is_split_by_seed(tmp_path):
    convs = conversations(80)
    forms = [lambda q, a, c: {"input": q, "output": a, "category": c},
             lambda q, a, c: {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
             lambda q, a, c: {"text": format_chat(q, a)}]
    records = [forms[i % 3](*conv) for i, conv in enumerate(convs)]
    src = write_jsonl(tmp_path / "mine.jsonl", records)
    first = prepare_from(src, tmp_path / "a", seed=3, quiet=True)
    prepare_from(src, tmp_path / "b", seed=3, quiet=True)
    prepare_from(src, tmp_path / "c", seed=4, quiet=True)
    for name in ("train.jsonl", "eval.jsonl", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    train, held = lines(tmp_path / "a" / "train.jsonl"), lines(tmp_path / "a" / "eval.jsonl")
    assert len(held) == 4 == first["eval"]["samples"] and len(train) == 76  # 5% of 80
    as_text = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows)  # noqa: E731
    assert as_text(train + held) == as_text(records)  # nothing lost, nothing added
    assert lines(tmp_path / "c" / "eval.jsonl") != held


def test_hold_out_is_seeded_disjoint_and_in_file_order():
    train, held = hold_out(100, 0.1, seed=0)
    again, _ = hold_out(100, 0.1, seed=0)
    assert len(held) == 10 and (train == again).all() and not set(train) & set(held)
    assert list(held) == sorted(held) and sorted([*train, *held]) == list(range(100))
    with pytest.raises(DataError, match="at least 2 records"):
        hold_out(1, 0.05, seed=0)


def test_the_report_counts_tokens_the_longest_sample_and_the_truncated(tmp_path):
    convs = conversations(40)
    long_ones = [(q, " ".join([a] * 12), c) for q, a, c in convs[:3]]  # well past 64 tokens
    rows = [{"input": q, "output": a, "category": c} for q, a, c in long_ones + convs[3:]]
    src = tmp_path / "d"
    write_jsonl(src / "train.jsonl", rows)
    write_jsonl(src / "valid.jsonl", rows[-2:])
    summary = prepare_from(src, tmp_path / "out", max_len=64, quiet=True)
    tok = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    lengths = [len(tok.encode(format_chat(r["input"], r["output"])).ids) for r in rows]
    assert summary["train"]["tokens"] == sum(lengths) and summary["train"]["longest"] == max(lengths)
    assert summary["train"]["truncated"] == sum(n > 64 for n in lengths) == 3
    assert summary["vocab_used"] == tok.get_vocab_size()
    assert summary["train_vocab_size"] % 64 == 0 and 0 <= summary["train_vocab_size"] - tok.get_vocab_size() < 64
    assert f"--vocab-size {summary['train_vocab_size']} --max-seq-len 64" in summary["train_command"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_train_reads_the_directory_with_the_vocab_size_it_was_told(tmp_path):
    src = write_jsonl(tmp_path / "mine.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(60)])
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    tiny = PRESETS["tiny"]
    cfg = tiny.replace(batch_size=1, model=tiny.model.replace(vocab_size=summary["train_vocab_size"]))
    data = load_for_training(cfg, tmp_path / "out", quiet=True)
    assert data.report["train_samples"] == 57 and data.report["eval_samples"] == 3
    assert next(data.train)["inputs"].max() < summary["train_vocab_size"]


@pytest.mark.parametrize("line, reason", [('{"input": "hi"}', "missing or non-string field 'output'"),
                                          ('{"input": "hi", "output": "x"', "not valid JSON"),
                                          ('{"prompt": "hi"}', "record has none of")])
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, reason):
    src = tmp_path / "d"
    write_jsonl(src / "train.jsonl", [{"input": "a", "output": "b"}] * 5)
    (src / "test.jsonl").write_text('{"input": "a", "output": "b"}\n\n' + line + "\n")
    with pytest.raises(DataError) as err:
        prepare_from(src, tmp_path / "out", quiet=True)
    assert str(err.value).startswith(f"{src / 'test.jsonl'}:3: {reason}")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_train_jsonl_pools_its_files_and_the_source_is_never_overwritten(tmp_path):
    src = tmp_path / "chats"
    write_jsonl(src / "part1.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20)])
    write_jsonl(src / "part2.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20, start=20)])
    assert [p.name for p in find_sources(src).train] == ["part1.jsonl", "part2.jsonl"]
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert summary["train"]["samples"] + summary["eval"]["samples"] == 40
    hub = tmp_path / "hub"
    write_jsonl(hub / "train.jsonl", [{"input": "a", "output": "b"}] * 5)
    before = (hub / "train.jsonl").read_bytes()
    with pytest.raises(ValueError, match="would overwrite the source file"):
        prepare_from(hub, hub, quiet=True)
    assert (hub / "train.jsonl").read_bytes() == before
    with pytest.raises(DataError, match="no such file or folder"):
        prepare_from(tmp_path / "nothing", tmp_path / "o", quiet=True)
