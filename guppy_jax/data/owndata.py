"""Your own conversations -> a prepared data directory, as `prepare` makes from a persona.

The source is a JSONL or parquet file, or a folder of them. Records may take any form `train`
reads (`{"input", "output"}`, `{"text"}`, `{"messages": [...]}`), which covers the original
GuppyLM's files too: its `{"text": <ChatML>, "category"}` train.jsonl/eval.jsonl, its published
`{"input", "output", "category"}` train.jsonl/test.jsonl, and the same published dataset as the
hub serves it, `data/train-00000-of-00001.parquet` and `data/test-00000-of-00001.parquet`.

A folder with a train.jsonl uses it for training and the first of eval.jsonl, validation.jsonl,
valid.jsonl, test.jsonl for eval. Otherwise parquet files named by split, in the folder or in
its data/ folder (`train.parquet` or `train-*.parquet` shards, and likewise eval, validation,
valid, test), do the same: every train shard trains, every shard of the first eval split
evaluates. A folder with neither pools every *.jsonl and *.parquet in it (and the parquet in
data/). With no eval file, a seeded share of the records is held out. Reading parquet needs
pyarrow (the `parquet` extra); it is read a record batch at a time.

It streams: the input is read once, a record at a time, with a progress bar (bytes and
conversations a second); the records are copied as they came (the category kept) to
train.jsonl and eval.jsonl; the byte-level BPE tokenizer is trained from an iterator over the
training text; then each split is tokenized a chunk at a time into the token store `train`
maps (guppy_jax.data.store). Memory stays bounded whatever the input's size: a few numbers per
conversation, one chunk of texts, and the tokenizer's word counts. The summary says how many
samples and tokens there are, the longest sample, how many samples the context length will
cut, and the `train` line to run.

A record that cannot be trained on (bad UTF-8 or JSON, missing fields, or no text: one
character or only whitespace) is left out and reported as `file:line: reason` (a parquet
file's row, counted from 0), and the report ends with how many were left out; `strict` (the
--strict flag) makes the first one an error instead. A disk without room for the output
(about twice the input, and the token store) is refused before anything is written.

The four files are swapped in as --out whole, as a persona's are (guppy_jax.datadir): a
killed or failed prepare leaves the old directory as it was, a second prepare into the same
--out is refused while the first runs, and --out may hold nothing but a data directory's
files, since all of it is replaced.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..core.faults import moment
from ..core.tokenizer import MAX_VOCAB, MIN_VOCAB, lowercase_loses_nothing, train_tokenizer
from .batches import DataError, parse_line, record_text
from .datadir import fill_of_lengths, finish, jsonl_texts, replacing, write_store

EVAL_SPLITS = ("eval", "validation", "valid", "test")  # the first one present evaluates
EVAL_NAMES = tuple(f"{split}.jsonl" for split in EVAL_SPLITS)
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json", "summary.json")
PARQUET_BATCH = 8192  # records read from a parquet file at a time
SHOWN_BAD = 20  # bad records reported one by one; the rest are counted
ROOM_FACTOR = {".jsonl": 2.5, ".parquet": 10.0}  # output bytes per input byte, at most (see needed_room)
NO_PYARROW = ("reading parquet needs pyarrow, which is not installed: pip install pyarrow "
              "(or this project's extra: pip install -e '.[parquet]')")


@dataclass
class Sources:
    train: list[Path]
    eval: list[Path] = field(default_factory=list)  # empty: hold out a seeded share of train
    ignored: list[Path] = field(default_factory=list)


def parquet_split(path: Path) -> str | None:
    """The split a parquet file's name gives it, as the hub names them: `train.parquet` or
    `train-00000-of-00001.parquet` -> "train"; None for a name that is no split."""
    stem = path.name[: -len(".parquet")]
    for split in ("train", *EVAL_SPLITS):
        if stem == split or stem.startswith(split + "-"):
            return split
    return None


def find_sources(path) -> Sources:
    """Which files train and which evaluate, from a JSONL or parquet file or a folder."""
    path = Path(path)
    if path.is_file():
        return Sources([path])
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "train.jsonl").is_file():
        evals = [path / name for name in EVAL_NAMES if (path / name).is_file()]
        return Sources([path / "train.jsonl"], evals[:1], evals[1:])
    parquet = sorted(p for folder in (path, path / "data") for p in folder.glob("*.parquet") if p.is_file())
    splits = {split: [p for p in parquet if parquet_split(p) == split] for split in ("train", *EVAL_SPLITS)}
    if splits["train"]:
        evals = [splits[split] for split in EVAL_SPLITS if splits[split]]
        return Sources(splits["train"], evals[0] if evals else [], [p for later in evals[1:] for p in later])
    pooled = sorted(p for p in path.glob("*.jsonl") if p.is_file()) + parquet
    if not pooled:
        raise DataError(f"{path}: no .jsonl or .parquet files in this folder (nor .parquet in its data/ folder)")
    return Sources(pooled)


def import_parquet():
    """pyarrow.parquet, or a one-line DataError saying what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(NO_PYARROW) from None
    return pq


def read_parquet(path: Path):
    """(where, record, bytes read) for every row of a parquet file, a record batch at a time;
    `where` is "file: row N", N counted from 0 as pandas and datasets index rows. The bytes
    are the file's size shared out over its rows (for the progress bar)."""
    pq = import_parquet()
    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow's own errors (ArrowInvalid, ArrowIOError...)
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    per_row = path.stat().st_size / max(1, file.metadata.num_rows)
    with file:
        row = 0
        for batch in file.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", record, per_row
                row += 1


def read_jsonl_lines(path: Path):
    """(where, record or the DataError that says why not, bytes read) for every non-blank line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                record = parse_line(raw, where)
            except DataError as err:
                yield where, err, len(raw)
                continue
            if record is not None:
                yield where, record, len(raw)


def read_source(path: Path):
    return read_parquet(path) if path.suffix == ".parquet" else read_jsonl_lines(path)


def has_text(record: dict) -> bool:
    """False for a record with nothing to learn from: one character, or only whitespace."""
    if "messages" in record:
        content = "".join(m["content"] for m in record["messages"])
    elif "text" in record:
        content = record["text"]
    else:
        content = record["input"] + record["output"]
    return len(content.strip()) >= 2


class BadRecords:
    """The records left out: each reported as `where: reason` on stderr (the first SHOWN_BAD
    of them), all counted; with `strict` the first one is raised instead."""

    def __init__(self, strict: bool, quiet: bool):
        self.strict, self.quiet, self.count, self.shown = strict, quiet, 0, []

    def add(self, err: DataError) -> None:
        if self.strict:
            raise err
        self.count += 1
        if len(self.shown) < SHOWN_BAD:
            self.shown.append(str(err))
            if not self.quiet:
                tqdm.write(f"left out: {err}", file=sys.stderr)


@dataclass
class Copied:
    records: int = 0
    lowercase: bool = True  # every answer so far is lowercase (lowercase_loses_nothing)
    categories: array = field(default_factory=lambda: array("i"))  # each record's, as an index into `names`
    names: dict = field(default_factory=dict)


def copy_records(paths: list[Path], out: Path, bad: BadRecords, bar) -> Copied:
    """Check every record of `paths` and write the good ones, as they came, to the JSONL file
    `out`; the bad ones go to `bad`. A file with no record at all is an error."""
    copied = Copied()
    with open(out, "w", encoding="utf-8") as f:
        for path in paths:
            before = copied.records + bad.count
            for where, record, size in read_source(path):
                bar.update(size)
                try:
                    if isinstance(record, DataError):
                        raise record
                    text = record_text(record, where)  # checks the record's form first
                    if not has_text(record):
                        raise DataError(f"{where}: no text to learn from (one character or only whitespace)")
                except DataError as err:
                    bad.add(err)
                    continue
                f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
                copied.records += 1
                copied.lowercase = copied.lowercase and lowercase_loses_nothing([text])
                category = str(record.get("category", ""))
                copied.categories.append(copied.names.setdefault(category, len(copied.names)))
                if copied.records % 4096 == 0:
                    rate = copied.records / max(bar.format_dict["elapsed"], 1e-9)
                    bar.set_postfix_str(f"{rate:,.0f} conversations/s", refresh=False)
            if copied.records + bad.count == before:
                raise DataError(f"{path}: no records (the file is empty)")
    if not copied.records:
        raise DataError(f"{', '.join(map(str, paths))}: every record was left out ({bad.count}), none to train on")
    return copied


def split_records(records: Path, eval_rows: np.ndarray, train: Path, held: Path) -> None:
    """Copy the lines of `records` to `held` at the indices in eval_rows, the rest to `train`."""
    chosen = np.zeros(int(eval_rows.max()) + 1 if len(eval_rows) else 0, bool)
    chosen[eval_rows] = True
    with open(records, "rb") as src, open(train, "wb") as t, open(held, "wb") as e:
        for i, line in enumerate(src):
            (e if i < len(chosen) and chosen[i] else t).write(line)


def needed_room(paths: list[Path]) -> int:
    """Bytes the output may take at most: JSONL copies of the records (twice while the eval
    share is split off) and the token store (two bytes a token, fewer than the text's bytes).
    Parquet is compressed, so its records take several times the file's size as JSONL."""
    return int(sum(p.stat().st_size * ROOM_FACTOR.get(p.suffix, 2.5) for p in paths))


def check_room(out: Path, paths: list[Path]) -> None:
    """Refuse, before writing anything, a disk that cannot hold the output."""
    need = needed_room(paths)
    folder = out.resolve().parent
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DataError(f"--out {out}: its disk has {free / 2**30:.2f} GiB free and this input needs up to "
                        f"{need / 2**30:.2f} GiB: free some space or choose an --out on another disk")


def hold_out(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, eval) indices: a seeded random `fraction` held out (at least one), each in file order."""
    if n < 2:
        raise DataError(f"need at least 2 records to hold some out for eval, found {n}")
    n_eval = min(n - 1, max(1, round(n * fraction)))
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng(seed).permutation(n)[:n_eval]] = True
    return np.flatnonzero(~chosen), np.flatnonzero(chosen)


def check_out_dir(out: Path, source: Path, sources: Sources) -> None:
    """Never write into the folder being read (a later run would read the output as input),
    nor over a file being read."""
    out_dir = out.resolve()
    if source.is_dir():
        folder = source.resolve()
        if out_dir == folder or out_dir.is_relative_to(folder):
            where = "is" if out_dir == folder else "is inside"
            raise ValueError(f"--out {out} {where} the folder --from reads ({source}): choose an --out "
                             f"outside it")
    inputs = {p.resolve() for p in sources.train + sources.eval}
    clash = [name for name in OUTPUT_FILES if (out_dir / name) in inputs]
    if clash:
        raise ValueError(f"--out {out} would overwrite the source file {out / clash[0]}: choose another --out")


def length_stats(lengths: np.ndarray, max_len: int) -> dict:
    """Tokens, the longest sample, how many samples max_len cuts and how many are too short to
    train on (under 2 tokens: nothing to predict; train drops them)."""
    return {"samples": int(len(lengths)), "tokens": int(lengths.sum()), "longest": int(lengths.max()),
            "mean": float(lengths.mean()), "truncated": int(np.count_nonzero(lengths > max_len)),
            "too_short": int(np.count_nonzero(lengths < 2))}


def names(paths) -> str:
    return ", ".join(Path(p).name for p in paths)


def prepare_from(source, out, seed: int = 42, vocab_size: int = 4096, eval_fraction: float = 0.05,
                 max_len: int = 128, quiet: bool = False, strict: bool = False) -> dict:
    """Write train.jsonl, eval.jsonl, tokenizer.json, the token store and summary.json from
    your own files, streaming (the module docstring says how)."""
    start = time.perf_counter()
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in [{MIN_VOCAB}, {MAX_VOCAB}], got {vocab_size}")
    if not 0 < eval_fraction < 1 or max_len < 2:
        raise ValueError(f"--eval-fraction must be in (0, 1) and --max-seq-len at least 2, "
                         f"got {eval_fraction} and {max_len}")
    source, out = Path(source), Path(out)
    sources = find_sources(source)
    check_out_dir(out, source, sources)
    if any(p.suffix == ".parquet" for p in sources.train + sources.eval):
        import_parquet()  # say what to install before reading anything
    check_room(out, sources.train + sources.eval)
    bad = BadRecords(strict, quiet)
    total = sum(p.stat().st_size for p in sources.train + sources.eval)
    with replacing(out, quiet=quiet) as new:  # locked from here: a second prepare into --out is refused
        with tqdm(total=total, unit="B", unit_scale=True, desc="reading", disable=quiet, leave=False) as bar:
            if sources.eval:
                copied = copy_records(sources.train, new / "train.jsonl", bad, bar)
                moment("prepare.train_written")
                held = copy_records(sources.eval, new / "eval.jsonl", bad, bar)
                rows = np.arange(copied.records)
                # a capital in an eval answer counts too: the tokenizer must write it
                lowercase, how = copied.lowercase and held.lowercase, f"from {names(sources.eval)}"
            else:
                copied = copy_records(sources.train, new / ".records.jsonl", bad, bar)
                moment("prepare.train_written")
                rows, eval_rows = hold_out(copied.records, eval_fraction, seed)
                split_records(new / ".records.jsonl", eval_rows, new / "train.jsonl", new / "eval.jsonl")
                os.unlink(new / ".records.jsonl")
                lowercase, how = copied.lowercase, f"{eval_fraction:.0%} held out, seed {seed}"
        moment("prepare.eval_written")
        counts = np.bincount(np.asarray(copied.categories, np.int64)[rows], minlength=len(copied.names))
        tok = train_tokenizer(jsonl_texts(new / "train.jsonl"), vocab_size, lowercase=lowercase)
        lengths = {}
        for split in ("train", "eval"):
            with tqdm(desc=f"tokenizing {split}", unit=" conversations", disable=quiet, leave=False) as bar:
                texts = jsonl_texts(new / f"{split}.jsonl")
                lengths[split] = write_store(new, split, tok, (bar.update(1) or text for text in texts))
        moment("prepare.store_written")
        stats = {split: length_stats(lengths[split], max_len) for split in ("train", "eval")}
        for split, numbers in stats.items():
            if numbers["too_short"] == numbers["samples"]:
                raise DataError(f"{source}: no {split} sample has 2 tokens or more, so there is nothing to train "
                                f"or evaluate on")
        summary = {"source": str(source), "train_files": [str(p) for p in sources.train],
                   "eval_files": [str(p) for p in sources.eval], "ignored_files": [str(p) for p in sources.ignored],
                   "eval_split": how, "seed": seed, "max_seq_len": max_len, **stats,
                   "per_category": dict(sorted((name, int(counts[i])) for name, i in copied.names.items()
                                               if counts[i])),
                   "left_out": bad.count, "left_out_shown": bad.shown,
                   "vocab_used": tok.get_vocab_size(), "vocab_size": vocab_size, "reads_lowercase": lowercase,
                   "fill_at_max_seq_len": fill_of_lengths(lengths["train"], max_len)}
        summary["train_command"] = (f"python -m guppy_jax.train --data-dir {out}"
                                    + ("" if max_len == 128 else f" --max-seq-len {max_len}"))
        tok.save(str(new / "tokenizer.json"))
        moment("prepare.tokenizer_written")
        finish(new, summary)
    if not quiet:
        print_report(summary, out, time.perf_counter() - start)
    return summary


def print_report(summary: dict, out: Path, seconds: float) -> None:
    train, held = summary["train"], summary["eval"]
    if summary["eval_files"]:
        print(f"{summary['source']}: train {train['samples']} samples from {names(summary['train_files'])}; "
              f"eval {held['samples']} samples from {names(summary['eval_files'])}")
    else:
        print(f"{summary['source']}: {train['samples'] + held['samples']} samples from "
              f"{names(summary['train_files'])}: train {train['samples']}, eval {held['samples']} "
              f"({summary['eval_split']})")
    for ignored in summary["ignored_files"]:
        print(f"  not used: {ignored} (one eval split is read, the first of {', '.join(EVAL_SPLITS)})")
    cut = train["truncated"] + held["truncated"]
    print(f"  train {train['samples']} samples, {train['tokens']} tokens; eval {held['samples']} samples, "
          f"{held['tokens']} tokens; longest {max(train['longest'], held['longest'])} tokens, mean "
          f"{train['mean']:.1f}")
    print(f"  {cut} samples longer than the context length ({summary['max_seq_len']} tokens) will be "
          f"truncated" + (" (keeping their start)" if cut else ""))
    short = train["too_short"] + held["too_short"]
    if short:
        print(f"  {short} samples of one token (train {train['too_short']}, eval {held['too_short']}) have "
              f"nothing to predict: train leaves them out")
    reads = ("reads input lowercased: every answer is lowercase" if summary["reads_lowercase"] else
             "keeps capitals: the answers use them")
    print(f"  tokenizer: {summary['vocab_used']} ids used (cap {summary['vocab_size']}), {reads}; written to "
          f"{out} in {seconds:.1f}s")
    if summary["left_out"]:
        more = summary["left_out"] - len(summary["left_out_shown"])
        print(f"  {summary['left_out']} record{'' if summary['left_out'] == 1 else 's'} left out as unusable (each named above"
              + (f", the first {len(summary['left_out_shown'])}" if more else "") + "; --strict stops at the first)")
    print(f"  train with: {summary['train_command']}")
