"""Your own conversations -> a prepared data directory, as `prepare` makes from a persona.

The source is a JSONL file or a folder. Records may take any form `train` reads
(`{"input", "output"}`, `{"text"}`, `{"messages": [...]}`), which covers the original
GuppyLM's files too: its `{"text": <ChatML>, "category"}` train.jsonl/eval.jsonl and its
published `{"input", "output", "category"}` train.jsonl/test.jsonl. A folder with a
train.jsonl uses it for training and the first of eval.jsonl, validation.jsonl, valid.jsonl,
test.jsonl for eval; a folder without one pools every *.jsonl in it. With no eval file, a
seeded share of the records is held out. Records are written as they came (the category
kept), the byte-level BPE tokenizer is trained on the training text, and the summary says
how many samples and tokens there are, the longest sample, how many samples the context
length will cut, and the `--vocab-size` to train with.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import DataError, encode_texts, read_jsonl, record_text
from .datadir import fill_shares
from .persona import write_jsonl
from .tokenizer import MAX_VOCAB, MIN_VOCAB, lowercase_loses_nothing, train_tokenizer

EVAL_NAMES = ("eval.jsonl", "validation.jsonl", "valid.jsonl", "test.jsonl")
OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json", "summary.json")
VOCAB_MULTIPLE = 64  # the vocab to train with is rounded up to this (the tied head's rows)


@dataclass
class Sources:
    train: list[Path]
    eval: list[Path] = field(default_factory=list)  # empty: hold out a seeded share of train
    ignored: list[Path] = field(default_factory=list)


def find_sources(path) -> Sources:
    """Which files train and which evaluate, from a JSONL file or a folder."""
    path = Path(path)
    if path.is_file():
        return Sources([path])
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "train.jsonl").is_file():
        evals = [path / name for name in EVAL_NAMES if (path / name).is_file()]
        return Sources([path / "train.jsonl"], evals[:1], evals[1:])
    pooled = sorted(p for p in path.glob("*.jsonl") if p.is_file())
    if not pooled:
        raise DataError(f"{path}: no .jsonl files in this folder")
    return Sources(pooled)


def read_records(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """(records, formatted texts) from JSONL files; a bad line is a DataError naming it."""
    records, texts = [], []
    for path in paths:
        before = len(records)
        for where, record in read_jsonl(path):
            texts.append(record_text(record, where))
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


def check_out_dir(out: Path, sources: Sources) -> None:
    """Never write over the files being read."""
    inputs = {p.resolve() for p in sources.train + sources.eval}
    clash = [name for name in OUTPUT_FILES if (out / name).resolve() in inputs]
    if clash:
        raise ValueError(f"--out {out} would overwrite the source file {out / clash[0]}: choose another --out")


def token_stats(tok, texts: list[str], max_len: int) -> dict:
    """Tokens, the longest sample and how many samples max_len cuts."""
    lengths = [len(enc.ids) for enc in tok.encode_batch(texts)]
    return {"samples": len(lengths), "tokens": int(sum(lengths)), "longest": int(max(lengths)),
            "mean": float(np.mean(lengths)), "truncated": int(sum(n > max_len for n in lengths))}


def vocab_to_train(vocab_used: int) -> int:
    return -(-vocab_used // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def prepare_from(source, out, seed: int = 42, vocab_size: int = 4096, eval_fraction: float = 0.05,
                 max_len: int = 128, quiet: bool = False) -> dict:
    """Write train.jsonl, eval.jsonl, tokenizer.json and summary.json from your own files."""
    start = time.perf_counter()
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in [{MIN_VOCAB}, {MAX_VOCAB}], got {vocab_size}")
    if not 0 < eval_fraction < 1 or max_len < 2:
        raise ValueError(f"--eval-fraction must be in (0, 1) and --max-seq-len at least 2, "
                         f"got {eval_fraction} and {max_len}")
    sources, out = find_sources(source), Path(out)
    check_out_dir(out, sources)
    records, texts = read_records(sources.train)
    if sources.eval:
        (eval_records, eval_texts), how = read_records(sources.eval), f"from {sources.eval[0].name}"
    else:
        train_idx, eval_idx = hold_out(len(records), eval_fraction, seed)
        eval_records, eval_texts = [records[i] for i in eval_idx], [texts[i] for i in eval_idx]
        records, texts = [records[i] for i in train_idx], [texts[i] for i in train_idx]
        how = f"{eval_fraction:.0%} held out (seed {seed})"
    lowercase = lowercase_loses_nothing(texts + eval_texts)  # a capital in an eval answer counts too
    tok = train_tokenizer(texts, vocab_size, lowercase=lowercase)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", records)
    write_jsonl(out / "eval.jsonl", eval_records)
    tok.save(str(out / "tokenizer.json"))
    used = tok.get_vocab_size()
    summary = {"source": str(source), "train_files": [str(p) for p in sources.train],
               "eval_files": [str(p) for p in sources.eval], "ignored_files": [str(p) for p in sources.ignored],
               "eval_split": how, "seed": seed, "max_seq_len": max_len,
               "train": token_stats(tok, texts, max_len), "eval": token_stats(tok, eval_texts, max_len),
               "per_category": dict(sorted(Counter(str(r.get("category", "")) for r in records).items())),
               "vocab_used": used, "vocab_size": vocab_size, "reads_lowercase": lowercase,
               "train_vocab_size": vocab_to_train(used),
               "fill_at_max_seq_len": fill_shares(encode_texts(tok, texts, max_len).samples, max_len)}
    summary["train_command"] = (f"python -m guppy_jax.train --data-dir {out} --vocab-size "
                                f"{summary['train_vocab_size']}" + ("" if max_len == 128 else f" --max-seq-len {max_len}"))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if not quiet:
        print_report(summary, out, time.perf_counter() - start)
    return summary


def print_report(summary: dict, out: Path, seconds: float) -> None:
    train, held = summary["train"], summary["eval"]
    files = ", ".join(Path(p).name for p in summary["train_files"])
    print(f"{summary['source']}: {train['samples'] + held['samples']} samples from {files}; eval "
          f"{summary['eval_split']}")
    for ignored in summary["ignored_files"]:
        print(f"  not used: {ignored} (one eval file is read, the first of {', '.join(EVAL_NAMES)})")
    cut = train["truncated"] + held["truncated"]
    print(f"  train {train['samples']} samples, {train['tokens']} tokens; eval {held['samples']} samples, "
          f"{held['tokens']} tokens; longest {max(train['longest'], held['longest'])} tokens, mean "
          f"{train['mean']:.1f}")
    print(f"  {cut} samples longer than the context length ({summary['max_seq_len']} tokens) will be "
          f"truncated" + (" (keeping their start)" if cut else ""))
    reads = ("reads input lowercased: every answer is lowercase" if summary["reads_lowercase"] else
             "keeps capitals: the answers use them")
    print(f"  tokenizer: {summary['vocab_used']} ids used (cap {summary['vocab_size']}), {reads}; written to "
          f"{out} in {seconds:.1f}s")
    print(f"  train with: {summary['train_command']}")
