"""Generate a persona's synthetic conversations and train the tokenizer.

    python -m guppy_jax.prepare                                   # Guppy, 60K samples
    python -m guppy_jax.prepare --persona data/personas/mochi.toml --out data/generated/mochi

Writes train.jsonl, eval.jsonl (5% held out), tokenizer.json and summary.json into --out.
The same seed and persona give byte-identical files.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .data import encode_texts, pack_rows
from .persona import PersonaError, generate, load_persona, split, summarize, write_jsonl
from .tokenizer import format_chat, train_tokenizer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PERSONA = REPO / "data" / "personas" / "guppy.toml"
DEFAULT_OUT = REPO / "data" / "generated" / "guppy"


def fill_shares(samples, seq_len: int = 128) -> dict:
    """Share of row slots that hold real tokens, one conversation per row vs packed."""
    import numpy as np
    order = np.arange(len(samples))
    tokens = sum(len(s) for s in samples)
    return {mode: tokens / (len(pack_rows(samples, order, seq_len, packed)) * seq_len)
            for mode, packed in (("padded", False), ("packed", True))}


def prepare(persona_path=DEFAULT_PERSONA, out=DEFAULT_OUT, samples: int = 60_000, seed: int = 42,
            vocab_size: int = 4096, eval_fraction: float = 0.05, quiet: bool = False) -> dict:
    """Generate, split, write and train the tokenizer; returns the summary."""
    start = time.perf_counter()
    persona = load_persona(persona_path)
    if samples < 2:
        raise ValueError(f"--samples must be at least 2, got {samples}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = generate(persona, samples, seed)
    train, held_out = split(records, eval_fraction)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held_out)
    train_texts = [format_chat(r["input"], r["output"]) for r in train]
    tok = train_tokenizer(train_texts, vocab_size)
    tok.save(str(out / "tokenizer.json"))
    summary = summarize(records)
    encoded = encode_texts(tok, train_texts, 128)
    summary.update(persona=persona.name, seed=seed, train=len(train), eval=len(held_out),
                   vocab_used=tok.get_vocab_size(), vocab_size=vocab_size,
                   fill_at_128=fill_shares(encoded.samples), truncated_at_128=encoded.truncated)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    if not quiet:
        counts = summary["per_topic"].values()
        print(f"persona {persona.name!r}: {summary['samples']} samples over {summary['topics']} topics "
              f"({min(counts)}-{max(counts)} each), {summary['unique_share']:.1%} unique outputs")
        fill = summary["fill_at_128"]
        print(f"  train {len(train)}, eval {len(held_out)}; tokenizer: {tok.get_vocab_size()} of "
              f"{vocab_size} ids used; real tokens in 128-token rows: {fill['padded']:.1%} one "
              f"conversation per row, {fill['packed']:.1%} packed")
        print(f"  written to {out} in {time.perf_counter() - start:.1f}s")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m guppy_jax.prepare",
                                     description="Generate synthetic conversations from a persona "
                                                 "file and train the BPE tokenizer.")
    parser.add_argument("--persona", default=str(DEFAULT_PERSONA), help="persona TOML file (default: Guppy)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=60_000, help="conversations to generate (default: 60000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocab cap (default: 4096)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prepare(args.persona, args.out, args.samples, args.seed, args.vocab_size)
    except (PersonaError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
