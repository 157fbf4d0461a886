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

Records are written as they came (the category kept), the byte-level BPE tokenizer is trained on
the training text, and the summary says how many samples and tokens there are, the longest
sample, how many samples the context length will cut, and the `train` line to run. A record
that cannot be trained on (bad JSON, missing fields, or no text: one character or only
whitespace) stops it with its file and line (a parquet file's row, counted from 0).

The four files are swapped in as --out whole, as a persona's are (guppy_jax.datadir): a
killed or failed prepare leaves the old directory as it was, a second prepare into the same
--out is refused while the first runs, and --out may hold nothing but a data directory's
files, since all of it is replaced.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .batches import DataError, encode_texts, read_jsonl, record_text
from .datadir import fill_shares, replacing, write_data
from ..core.tokenizer import MAX_VOCAB, MIN_VOCAB, lowercase_loses_nothing, train_tokenizer

EVAL_SPLITS = ("eval", "validation", "valid", "test")  # the first one present evaluates
EVAL_NAMES = tuple(f"{split}.jsonl" for split in EVAL_SPLITS)
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json", "summary.json")
PARQUET_BATCH = 8192  # records read from a parquet file at a time
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
    """(where, record) for every row of a parquet file, a record batch at a time; `where` is
    "file: row N", N counted from 0 as pandas and datasets index rows."""
    pq = import_parquet()
    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow's own errors (ArrowInvalid, ArrowIOError...)
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    with file:
        row = 0
        for batch in file.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                yield f"{path}: row {row}", record
                row += 1


def read_source(path: Path):
    return read_parquet(path) if path.suffix == ".parquet" else read_jsonl(path)


def has_text(record: dict) -> bool:
    """False for a record with nothing to learn from: one character, or only whitespace."""
    if "messages" in record:
        content = "".join(m["content"] for m in record["messages"])
    elif "text" in record:
        content = record["text"]
    else:
        content = record["input"] + record["output"]
    return len(content.strip()) >= 2


def read_records(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(records, formatted texts) from JSONL or parquet files; a record that cannot be trained on
    is a DataError naming its file and line (or row)."""
    records, texts = [], []
    for path in paths:
        before = len(records)
        for where, record in read_source(path):
            text = record_text(record, where)  # checks the record's form first
            if not has_text(record):
                raise DataError(f"{where}: no text to learn from (one character or only whitespace)")
            texts.append(text)
            records.append(record)
        if len(records) == before:
            raise DataError(f"{path}: no records (the file is empty)")
    return records, texts


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


def token_stats(tok, texts: list[str], max_len: int) -> dict:
    """Tokens, the longest sample, how many samples max_len cuts and how many are too short to
    train on (under 2 tokens: nothing to predict; train drops them)."""
    lengths = [len(enc.ids) for enc in tok.encode_batch(texts)]
    return {"samples": len(lengths), "tokens": int(sum(lengths)), "longest": int(max(lengths)),
            "mean": float(np.mean(lengths)), "truncated": int(sum(n > max_len for n in lengths)),
            "too_short": int(sum(n < 2 for n in lengths))}


def names(paths) -> str:
    return ", ".join(Path(p).name for p in paths)


def prepare_from(source, out, seed: int = 42, vocab_size: int = 4096, eval_fraction: float = 0.05,
                 max_len: int = 128, quiet: bool = False) -> dict:
    """Write train.jsonl, eval.jsonl, tokenizer.json and summary.json from your own files."""
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
    with replacing(out, quiet=quiet) as new:  # locked from here: a second prepare into --out is refused
        records, texts = read_records(sources.train)
        if sources.eval:
            (eval_records, eval_texts), how = read_records(sources.eval), f"from {names(sources.eval)}"
        else:
            train_idx, eval_idx = hold_out(len(records), eval_fraction, seed)
            eval_records, eval_texts = [records[i] for i in eval_idx], [texts[i] for i in eval_idx]
            records, texts = [records[i] for i in train_idx], [texts[i] for i in train_idx]
            how = f"{eval_fraction:.0%} held out, seed {seed}"
        lowercase = lowercase_loses_nothing(texts + eval_texts)  # a capital in an eval answer counts too
        tok = train_tokenizer(texts, vocab_size, lowercase=lowercase)
        stats = {"train": token_stats(tok, texts, max_len), "eval": token_stats(tok, eval_texts, max_len)}
        for split, numbers in stats.items():
            if numbers["too_short"] == numbers["samples"]:
                raise DataError(f"{source}: no {split} sample has 2 tokens or more, so there is nothing to train "
                                f"or evaluate on")
        summary = {"source": str(source), "train_files": [str(p) for p in sources.train],
                   "eval_files": [str(p) for p in sources.eval], "ignored_files": [str(p) for p in sources.ignored],
                   "eval_split": how, "seed": seed, "max_seq_len": max_len, **stats,
                   "per_category": dict(sorted(Counter(str(r.get("category", "")) for r in records).items())),
                   "vocab_used": tok.get_vocab_size(), "vocab_size": vocab_size, "reads_lowercase": lowercase,
                   "fill_at_max_seq_len": fill_shares(encode_texts(tok, texts, max_len).samples, max_len)}
        summary["train_command"] = (f"python -m guppy_jax.train --data-dir {out}"
                                    + ("" if max_len == 128 else f" --max-seq-len {max_len}"))
        write_data(new, records, eval_records, tok, summary)
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
    print(f"  train with: {summary['train_command']}")
