"""A prepared data directory: written from a persona, read back for training.

    train.jsonl, eval.jsonl   the conversations (5% held out)
    tokenizer.json            byte-level BPE with <pad>=0, <|im_start|>=1, <|im_end|>=2
    summary.json              counts, per-topic balance, padded/packed fill shares

`prepare` writes one (the `prepare` command is a thin wrapper around it);
`ensure_prepared` is the one rule for a missing directory: the default Guppy directory is
generated on first use, any other is an error that says how to make it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import DEFAULT_DATA, DEFAULT_PERSONA
from .data import Batches, DataError, encode_texts, load_texts, pack_rows, padded_row_len
from .memory import check_prepare_fits
from .persona import generate, load_persona, split, summarize, write_jsonl
from .tokenizer import (MAX_VOCAB, MIN_VOCAB, format_chat, load_tokenizer, lowercase_loses_nothing,
                        train_tokenizer)

DATA_FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json")


def fill_shares(samples, seq_len: int = 128) -> dict:
    """Share of row slots that hold real tokens, one conversation per row vs packed."""
    import numpy as np
    order = np.arange(len(samples))
    tokens = sum(len(s) for s in samples)
    return {mode: tokens / (len(pack_rows(samples, order, seq_len, packed)) * seq_len)
            for mode, packed in (("padded", False), ("packed", True))}


def prepare(persona_path=DEFAULT_PERSONA, out=DEFAULT_DATA, samples: int = 60_000, seed: int = 42,
            vocab_size: int = 4096, eval_fraction: float = 0.05, quiet: bool = False) -> dict:
    """Generate, split, write and train the tokenizer; returns the summary."""
    start = time.perf_counter()
    persona = load_persona(persona_path)
    if samples < 2:
        raise ValueError(f"--samples must be at least 2, got {samples}")
    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"--vocab-size must be in [{MIN_VOCAB}, {MAX_VOCAB}] (the 256 byte tokens and 3 "
                         f"specials at least), got {vocab_size}")
    check_prepare_fits(samples)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = generate(persona, samples, seed)
    train, held_out = split(records, eval_fraction)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held_out)
    train_texts = [format_chat(r["input"], r["output"]) for r in train]
    lowercase = lowercase_loses_nothing(train_texts + [format_chat(r["input"], r["output"]) for r in held_out])
    tok = train_tokenizer(train_texts, vocab_size, lowercase=lowercase)
    tok.save(str(out / "tokenizer.json"))
    summary = summarize(records)
    encoded = encode_texts(tok, train_texts, 128)
    summary.update(persona=persona.name, seed=seed, train=len(train), eval=len(held_out),
                   vocab_used=tok.get_vocab_size(), vocab_size=vocab_size, reads_lowercase=lowercase,
                   fill_at_128=fill_shares(encoded.samples), truncated_at_128=encoded.truncated)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if not quiet:
        print_summary(summary, out, time.perf_counter() - start)
    return summary


def print_summary(summary: dict, out: Path, seconds: float) -> None:
    counts = summary["per_topic"].values()
    print(f"persona {summary['persona']!r}: {summary['samples']} samples over {summary['topics']} topics "
          f"({min(counts)}-{max(counts)} each), {summary['unique_share']:.1%} unique outputs")
    fill = summary["fill_at_128"]
    reads = ", reads input lowercased" if summary["reads_lowercase"] else ""
    print(f"  train {summary['train']}, eval {summary['eval']}; tokenizer: {summary['vocab_used']} of "
          f"{summary['vocab_size']} ids used{reads}; real tokens in 128-token rows: {fill['padded']:.1%} one "
          f"conversation per row, {fill['packed']:.1%} packed")
    print(f"  written to {out} in {seconds:.1f}s")


def ensure_prepared(data_dir, vocab_size: int = 4096, quiet: bool = False) -> Path:
    """The data directory, generated first if it is the default one and missing; any other
    missing directory or file is a DataError that names it."""
    data_dir = Path(data_dir)
    if not (data_dir / "train.jsonl").exists():
        if data_dir.resolve() != DEFAULT_DATA.resolve():
            raise DataError(f"missing data file {data_dir / 'train.jsonl'} (prepare it with "
                            f"`python -m guppy_jax.prepare --out {data_dir}`)")
        if not quiet:
            print(f"no data in {data_dir}: generating the Guppy dataset and tokenizer first")
        prepare(out=data_dir, vocab_size=vocab_size, quiet=quiet)
    for name in DATA_FILES[1:]:
        if not (data_dir / name).exists():
            raise DataError(f"missing data file {data_dir / name}")
    return data_dir


def load_samples(data_dir, max_len: int, vocab_size: int = 4096, split_name: str = "train"):
    """Token-id arrays of one split (load-or-prepare), for bench and compare."""
    data_dir = ensure_prepared(data_dir, vocab_size, quiet=True)
    tok = load_tokenizer(data_dir / "tokenizer.json")
    return encode_texts(tok, load_texts(data_dir / f"{split_name}.jsonl"), max_len).samples


@dataclass
class TrainingData:
    tok: object          # tokenizers.Tokenizer
    train: Batches
    eval: Batches
    report: dict         # sample counts, truncated/dropped, the row length used


# A vocab grown to fit a tokenizer is rounded up to this: the tied embedding is also the output
# head's matmul, whose width then stays a multiple of the GPU's tile sizes, as 2048 and 4096 are.
VOCAB_MULTIPLE = 64


def fit_vocab(cfg, data_dir) -> tuple[object, str]:
    """(cfg, note): the TrainConfig with a model vocab that holds every id of the data's
    tokenizer. A preset's vocab that is large enough is kept (so guppy-9m stays the original's
    8.7M model on data whose tokenizer uses fewer ids); a smaller one grows to the tokenizer's
    size rounded up to VOCAB_MULTIPLE, and the note says so."""
    have = load_tokenizer(Path(data_dir) / "tokenizer.json").get_vocab_size()
    if have <= cfg.model.vocab_size:
        return cfg, ""
    grown = -(-have // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    note = (f"vocab {grown}: the tokenizer's {have} ids rounded up to a multiple of {VOCAB_MULTIPLE} "
            f"(the preset's {cfg.model.vocab_size} is too small)")
    return cfg.replace(model=cfg.model.replace(vocab_size=grown)), note


def load_for_training(cfg, data_dir, quiet: bool = False, tokenizer=None) -> TrainingData:
    """Tokenizer and fixed-shape train/eval batches for a TrainConfig; fails early (DataError)
    on missing files, a tokenizer larger than the model's vocab or a batch larger than the data.
    `tokenizer` (a tokenizer.json path) encodes the texts instead of the data directory's own:
    a run that starts from another run's weights reads any data with that run's tokenizer."""
    data_dir = ensure_prepared(data_dir, cfg.model.vocab_size, quiet)
    tokenizer = Path(tokenizer) if tokenizer is not None else data_dir / "tokenizer.json"
    tok = load_tokenizer(tokenizer)
    if tok.get_vocab_size() > cfg.model.vocab_size:
        raise DataError(f"{tokenizer} has {tok.get_vocab_size()} ids but the model's vocab_size is "
                        f"{cfg.model.vocab_size}: pass --vocab-size {tok.get_vocab_size()} or larger, or "
                        f"leave --vocab-size out to fit it to the tokenizer")
    max_len = cfg.model.max_seq_len
    train = encode_texts(tok, load_texts(data_dir / "train.jsonl"), max_len)
    held = encode_texts(tok, load_texts(data_dir / "eval.jsonl"), max_len)
    seq_len = cfg.seq_len
    if seq_len == 0:
        seq_len = max_len if cfg.packing else padded_row_len(train.samples + held.samples, max_len)
    train_batches = Batches(train.samples, cfg.batch_size, seq_len, cfg.packing, seed=cfg.seed)
    eval_batches = Batches(held.samples, cfg.batch_size, seq_len, cfg.packing, shuffle=False)
    report = {"train_samples": len(train.samples), "eval_samples": len(held.samples),
              "truncated": train.truncated + held.truncated, "dropped": train.dropped + held.dropped,
              "seq_len": seq_len}
    return TrainingData(tok, train_batches, eval_batches, report)
