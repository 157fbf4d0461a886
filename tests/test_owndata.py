"""Your own conversations -> a data directory: every record form, the published layouts (JSONL
and the hub's parquet), the seeded split, the report's numbers, bad lines and records with no
text named by file and line, and an --out that may not be the folder being read."""
import hashlib
import json
import sys
from pathlib import Path

import pytest

from guppy_jax.core.config import PRESETS
from guppy_jax.data.batches import DataError
from guppy_jax.data.datadir import load_for_training
from guppy_jax.data.owndata import find_sources, hold_out, prepare_from
from guppy_jax.core.tokenizer import format_chat, load_tokenizer, reads_lowercase

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
    assert summary["train"]["too_short"] == summary["eval"]["too_short"] == 0
    assert summary["vocab_used"] == tok.get_vocab_size()
    assert summary["train_command"] == f"python -m guppy_jax.train --data-dir {tmp_path / 'out'} --max-seq-len 64"
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_train_reads_the_directory_with_a_vocab_of_the_tokenizers_size(tmp_path):
    src = write_jsonl(tmp_path / "mine.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(60)])
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert "--vocab-size" not in summary["train_command"]  # train fits its vocab to the tokenizer itself
    tiny = PRESETS["tiny"]
    cfg = tiny.replace(batch_size=1, model=tiny.model.replace(vocab_size=summary["vocab_used"]))
    data = load_for_training(cfg, tmp_path / "out", quiet=True)
    assert data.report["train_samples"] == 57 and data.report["eval_samples"] == 3
    assert next(data.train)["inputs"].max() < summary["vocab_used"]


@pytest.mark.parametrize("line, reason", [('{"input": "hi"}', "missing or non-string field 'output'"),
                                          ('{"input": "hi", "output": "x"', "not valid JSON"),
                                          ('{"prompt": "hi"}', "record has none of")])
def test_a_bad_line_is_left_out_and_named_by_file_and_line_and_strict_stops_at_it(tmp_path, line, reason):
    src = tmp_path / "d"
    write_jsonl(src / "train.jsonl", [{"input": "a", "output": "b"}] * 5)
    (src / "test.jsonl").write_text('{"input": "a", "output": "b"}\n\n' + line + "\n")
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert summary["left_out"] == 1 and summary["left_out_shown"][0].startswith(f"{src / 'test.jsonl'}:3: {reason}")
    assert summary["eval"]["samples"] == 1 and len(lines(tmp_path / "out" / "eval.jsonl")) == 1
    with pytest.raises(DataError) as err:
        prepare_from(src, tmp_path / "strict", quiet=True, strict=True)
    assert str(err.value).startswith(f"{src / 'test.jsonl'}:3: {reason}")
    assert not (tmp_path / "strict").exists()


def test_a_folder_without_train_jsonl_pools_its_files(tmp_path):
    src = tmp_path / "chats"
    write_jsonl(src / "part1.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20)])
    write_jsonl(src / "part2.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20, start=20)])
    assert [p.name for p in find_sources(src).train] == ["part1.jsonl", "part2.jsonl"]
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert summary["train"]["samples"] + summary["eval"]["samples"] == 40
    with pytest.raises(DataError, match="no such file or folder"):
        prepare_from(tmp_path / "nothing", tmp_path / "o", quiet=True)
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="no .jsonl or .parquet files in this folder"):
        prepare_from(tmp_path / "empty", tmp_path / "o", quiet=True)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["pooled", "train and test"])
@pytest.mark.parametrize("out", [".", "prepared", "data"])
def test_out_may_not_be_the_folder_read_nor_inside_it(tmp_path, layout, out):
    src = tmp_path / "chats"
    rows = [{"input": q, "output": a} for q, a, _ in conversations(20)]
    if layout == "pooled":
        write_jsonl(src / "part1.jsonl", rows[:10])
        write_jsonl(src / "part2.jsonl", rows[10:])
    else:
        write_jsonl(src / "train.jsonl", rows[:17])
        write_jsonl(src / "test.jsonl", rows[17:])
    before = snapshot(src)
    with pytest.raises(ValueError, match="the folder --from reads") as err:
        prepare_from(src, src / out, quiet=True)
    assert ("inside" in str(err.value)) == (out != ".")
    assert snapshot(src) == before  # nothing written, so a second run cannot read its own output


def test_out_may_not_overwrite_the_file_read(tmp_path):
    src = write_jsonl(tmp_path / "train.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20)])
    before = src.read_bytes()
    with pytest.raises(ValueError, match="would overwrite the source file"):
        prepare_from(src, tmp_path, quiet=True)
    assert src.read_bytes() == before
    prepare_from(src, tmp_path / "out", quiet=True)  # beside it is fine


@pytest.mark.parametrize("record", [{"text": "a"}, {"text": " \n\t "}, {"input": " ", "output": "\n"},
                                    {"input": "", "output": "x"},
                                    {"messages": [{"role": "user", "content": " "},
                                                  {"role": "assistant", "content": ""}]}])
def test_a_record_with_no_text_is_left_out_by_file_and_line(tmp_path, record):
    rows = [{"input": q, "output": a} for q, a, _ in conversations(10)]
    src = write_jsonl(tmp_path / "mine.jsonl", rows[:4] + [record] + rows[4:])
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    assert summary["left_out_shown"] == [f"{src}:5: no text to learn from (one character or only whitespace)"]
    assert summary["train"]["samples"] + summary["eval"]["samples"] == 10
    with pytest.raises(DataError) as err:
        prepare_from(src, tmp_path / "strict", quiet=True, strict=True)
    assert str(err.value) == f"{src}:5: no text to learn from (one character or only whitespace)"
    assert not (tmp_path / "strict").exists()


def test_a_file_of_only_one_character_records_is_refused_not_a_division_by_zero(tmp_path, capsys):
    from guppy_jax.prepare import main as prepare_main
    src = write_jsonl(tmp_path / "dots.jsonl", [{"text": "."}] * 20)
    assert prepare_main(["--from", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {src}: every record was left out (20), none to train on\n"
    assert prepare_main(["--from", str(src), "--out", str(tmp_path / "out"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"error: {src}:1: no text to learn from (one character or only whitespace)"


def test_samples_the_tokenizer_makes_one_token_of_are_counted_and_never_all_there_is(tmp_path):
    src = write_jsonl(tmp_path / "hm.jsonl", [{"text": "hm"}] * 30)  # "hm" is merged into one token
    with pytest.raises(DataError, match="no train sample has 2 tokens or more"):
        prepare_from(src, tmp_path / "out", quiet=True)
    rows = [{"input": q, "output": a} for q, a, _ in conversations(30)]
    src = write_jsonl(tmp_path / "some.jsonl", rows + [{"text": "hm"}] * 30)
    summary = prepare_from(src, tmp_path / "out", seed=0, quiet=True)
    assert summary["train"]["too_short"] + summary["eval"]["too_short"] == 30


def test_each_count_in_the_report_names_what_it_counts(tmp_path, capsys):
    src = tmp_path / "hub"
    rows = [{"input": q, "output": a, "category": c} for q, a, c in conversations(50)]
    write_jsonl(src / "train.jsonl", rows[:45])
    write_jsonl(src / "test.jsonl", rows[45:])
    prepare_from(src, tmp_path / "a")
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{src}: train 45 samples from train.jsonl; eval 5 samples from test.jsonl"
    pooled = tmp_path / "pooled"
    write_jsonl(pooled / "a.jsonl", rows[:30])
    write_jsonl(pooled / "b.jsonl", rows[30:])
    prepare_from(pooled, tmp_path / "b", seed=1)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{pooled}: 50 samples from a.jsonl, b.jsonl: train 48, eval 2 (5% held out, seed 1)"


# The hub's parquet layout. pyarrow is in the `dev` extra, so these run in the suite.

def write_parquet(path: Path, rows: list[dict], row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def hub_rows(convs) -> list[dict]:
    return [{"input": q, "output": a, "category": c} for q, a, c in convs]


def test_the_hubs_parquet_dataset_prepares_with_its_own_train_and_test_split(tmp_path, monkeypatch):
    import guppy_jax.data.owndata as owndata
    monkeypatch.setattr(owndata, "PARQUET_BATCH", 7)  # many record batches, over several row groups
    hub = tmp_path / "guppylm-60k-generic"
    train, test = hub_rows(conversations(60)), hub_rows(conversations(6, start=60))
    write_parquet(hub / "data" / "train-00000-of-00001.parquet", train, row_group_size=16)
    write_parquet(hub / "data" / "test-00000-of-00001.parquet", test)
    (hub / "README.md").write_text("---\nlicense: mit\n---\n")
    summary = prepare_from(hub, tmp_path / "out", quiet=True)
    assert lines(tmp_path / "out" / "train.jsonl") == train  # every row, in order, columns kept
    assert lines(tmp_path / "out" / "eval.jsonl") == test
    assert summary["train_files"] == [str(hub / "data" / "train-00000-of-00001.parquet")]
    assert summary["eval_split"] == "from test-00000-of-00001.parquet"
    assert summary["per_category"]["topic0"] == 15
    tiny = PRESETS["tiny"]
    data = load_for_training(tiny.replace(batch_size=2), tmp_path / "out", quiet=True)
    assert data.report["train_samples"] == 60 and data.report["eval_samples"] == 6


def test_parquet_shards_map_the_hubs_split_names_in_the_folder_or_its_data_folder(tmp_path):
    hub = tmp_path / "hub"
    write_parquet(hub / "train-00000-of-00002.parquet", hub_rows(conversations(20)))
    write_parquet(hub / "train-00001-of-00002.parquet", hub_rows(conversations(20, start=20)))
    write_parquet(hub / "data" / "test-00000-of-00001.parquet", hub_rows(conversations(3, start=40)))
    write_parquet(hub / "data" / "validation-00000-of-00001.parquet", hub_rows(conversations(4, start=43)))
    sources = find_sources(hub)
    assert [p.name for p in sources.train] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [p.name for p in sources.eval] == ["validation-00000-of-00001.parquet"]
    assert [p.name for p in sources.ignored] == ["test-00000-of-00001.parquet"]
    write_parquet(hub / "data" / "eval.parquet", hub_rows(conversations(5, start=47)))
    summary = prepare_from(hub, tmp_path / "out", quiet=True)
    assert summary["train"]["samples"] == 40 and summary["eval"]["samples"] == 5
    assert summary["eval_split"] == "from eval.parquet"
    assert lines(tmp_path / "out" / "train.jsonl") == hub_rows(conversations(40))


def test_one_parquet_file_of_any_record_form_is_split_by_seed(tmp_path):
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "category": c}
            for q, a, c in conversations(40)]
    src = write_parquet(tmp_path / "chats.parquet", rows)
    summary = prepare_from(src, tmp_path / "out", seed=5, quiet=True)
    assert summary["train"]["samples"] == 38 and summary["eval"]["samples"] == 2
    as_text = lambda rows: sorted(json.dumps(r, sort_keys=True) for r in rows)  # noqa: E731
    written = lines(tmp_path / "out" / "train.jsonl") + lines(tmp_path / "out" / "eval.jsonl")
    assert as_text(written) == as_text(rows)


def test_a_bad_parquet_row_is_named_by_file_and_row(tmp_path):
    rows = hub_rows(conversations(10))
    rows[3]["output"] = None
    src = write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    summary = prepare_from(tmp_path, tmp_path.parent / "out", quiet=True)
    assert summary["left_out_shown"] == [f"{src}: row 3: missing or non-string field 'output'"]
    with pytest.raises(DataError) as err:
        prepare_from(tmp_path, tmp_path.parent / "strict", quiet=True, strict=True)
    assert str(err.value) == f"{src}: row 3: missing or non-string field 'output'"
    (tmp_path / "not.parquet").write_text("hello")
    with pytest.raises(DataError, match="not a readable parquet file"):
        prepare_from(tmp_path / "not.parquet", tmp_path.parent / "out", quiet=True)


def test_without_pyarrow_parquet_says_in_one_line_what_to_install(tmp_path, monkeypatch, capsys):
    from guppy_jax.prepare import main as prepare_main
    write_parquet(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet", hub_rows(conversations(10)))
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    assert prepare_main(["--from", str(tmp_path / "hub"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err == ("error: reading parquet needs pyarrow, which is not installed: pip install pyarrow "
                   "(or this project's extra: pip install -e '.[parquet]')\n")
    assert not (tmp_path / "out").exists()


def test_an_out_holding_the_file_read_is_refused_since_the_whole_directory_is_replaced(tmp_path):
    src = write_jsonl(tmp_path / "mine.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(20)])
    before = src.read_bytes()
    with pytest.raises(ValueError, match=r"holds files that are not a data directory's \(mine.jsonl\)"):
        prepare_from(src, tmp_path, quiet=True)
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mine.jsonl"]


def test_the_summary_ties_the_files_together_and_train_checks_it(tmp_path):
    src = write_jsonl(tmp_path / "mine.jsonl", [{"input": q, "output": a} for q, a, _ in conversations(60)])
    summary = prepare_from(src, tmp_path / "out", quiet=True)
    for name in ("train.jsonl", "eval.jsonl", "tokenizer.json"):
        assert summary["files"][name] == hashlib.sha256((tmp_path / "out" / name).read_bytes()).hexdigest()
    cfg = PRESETS["tiny"].replace(batch_size=1)
    assert load_for_training(cfg, tmp_path / "out", quiet=True).digest == summary["digest"]
    write_jsonl(tmp_path / "out" / "eval.jsonl", [{"input": "hi", "output": "a line from elsewhere"}])
    with pytest.raises(DataError, match="its files come from different prepares \\(eval.jsonl is not"):
        load_for_training(cfg, tmp_path / "out", quiet=True)
