"""Generate a persona's synthetic conversations and train the tokenizer.

    python -m guppy_jax.prepare                                   # Guppy, 60K samples
    python -m guppy_jax.prepare --persona data/personas/mochi.toml --out data/generated/mochi

Writes train.jsonl, eval.jsonl (5% held out), tokenizer.json and summary.json into --out.
The same seed and persona give byte-identical files.
"""
from __future__ import annotations

import sys

from . import cli
from .datadir import fill_shares, prepare
from .persona import PersonaError

__all__ = ["build_parser", "main", "prepare", "fill_shares"]


def build_parser():
    parser = cli.make_parser("prepare", "Generate synthetic conversations from a persona file and "
                                        "train the BPE tokenizer.\n\n" + __doc__)
    parser.add_argument("--persona", default=str(cli.DEFAULT_PERSONA), help="persona TOML file (default: Guppy)")
    parser.add_argument("--out", default=str(cli.DEFAULT_DATA), metavar="DIR", help="output data directory")
    parser.add_argument("--samples", type=int, default=60_000, help="conversations to generate")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocab cap")
    cli.add_quiet(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        prepare(args.persona, args.out, args.samples, args.seed, args.vocab_size, quiet=args.quiet)
    except (PersonaError, ValueError) as err:
        return cli.error(err, cli.EXIT_USAGE)
    except OSError as err:
        return cli.error(err, cli.EXIT_FAILED)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
