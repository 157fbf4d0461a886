"""Make a data directory for train: from a persona file, or from your own conversations.

    python -m guppy_jax.prepare                                   # Guppy, 60K samples
    python -m guppy_jax.prepare --persona data/personas/mochi.toml --out data/generated/mochi
    python -m guppy_jax.prepare --from my_chats.jsonl --out data/generated/mine
    python -m guppy_jax.prepare --from my_dataset/ --out data/generated/mine   # train.jsonl + test.jsonl
    python -m guppy_jax.prepare --from guppylm_hub/ --out data/generated/hub   # data/train-*.parquet ...

Writes train.jsonl and eval.jsonl (the conversations, to read), tokenizer.json (byte-level BPE
trained on the training text), the token store train maps (train.tokens, train.offsets.npy,
eval.tokens, eval.offsets.npy: every conversation tokenized once) and summary.json into --out. A persona's conversations are generated (5% held out); the same
seed and persona give byte-identical files. --from reads a JSONL or parquet file or a folder of
them, in any record form train reads: {"input","output"} (the original's published files),
{"text"} (the original's ChatML train/eval files) or {"messages": [...]}. A folder's
train.jsonl trains and its eval.jsonl, validation.jsonl, valid.jsonl or test.jsonl evaluates;
without one, parquet files named by split as the hub names them (train-*.parquet, and test-*,
validation-*, eval-* for eval), in the folder or its data/ folder, do the same; a folder with
neither pools its files. With no eval file, --eval-fraction of the records is held out (seeded).
--out may not be the folder --from reads, nor inside it. Parquet needs pyarrow (pip install
pyarrow). --from streams: memory stays flat whatever the input's size, a progress bar shows
bytes and conversations a second, a record that cannot be used is left out and named as
file:line: reason (--strict stops at the first instead), and a disk without room for the output
is refused before anything is written. It reports each split's samples and tokens, the longest
sample, what --max-seq-len will truncate, how many records were left out, and the train line
to run.

--out is replaced whole: the files are written into a temporary directory beside it and
swapped in when complete, so Ctrl-C, kill -9 or a full disk leave the old directory as it was
(the next prepare or train clears what a killed one left). --out must be new, empty or a data
directory, since all of it is replaced; a second prepare into the same --out is refused while
the first runs. summary.json records the sha256, size and time of the other files, and train
refuses a directory whose files do not match it.
"""
from __future__ import annotations

from . import cli
from .data.batches import DataError
from .data.datadir import fill_shares, prepare
from .data.owndata import prepare_from
from .data.persona import PersonaError

__all__ = ["build_parser", "main", "prepare", "fill_shares"]


def build_parser():
    parser = cli.make_parser("prepare", __doc__, raw=True)
    parser.epilog = __doc__.split("\n\n", 1)[1] + "\n" + cli.EXIT_CODES
    parser.add_argument("--persona", default=None, metavar="TOML",
                        help=f"persona file (default: Guppy, {cli.DEFAULT_PERSONA.name})")
    parser.add_argument("--from", dest="source", default=None, metavar="PATH",
                        help="your own conversations instead of a persona: a JSONL or parquet file, or a folder")
    parser.add_argument("--out", default=str(cli.DEFAULT_DATA), metavar="DIR",
                        help="output data directory (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=None,
                        help="conversations to generate from the persona (default: 60000)")
    parser.add_argument("--seed", type=int, default=42,
                        help="random seed of the generation and the eval split (default: %(default)s)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokenizer vocab cap (default: %(default)s)")
    parser.add_argument("--eval-fraction", type=float, default=0.05,
                        help="share held out for eval: a persona's, or --from's when it has no eval file "
                             "(default: %(default)s)")
    parser.add_argument("--max-seq-len", type=int, default=128,
                        help="--from: the context length to count truncated samples against (default: "
                             "%(default)s)")
    parser.add_argument("--strict", action="store_true",
                        help="--from: stop at the first record that cannot be used (default: leave it out, "
                             "name it as file:line: reason, and count it in the report)")
    cli.add_quiet(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.source is not None and (args.persona is not None or args.samples is not None):
        return cli.error("--from takes your own conversations: leave out --persona and --samples",
                         cli.EXIT_USAGE)
    if not 0 < args.eval_fraction < 1:
        return cli.error(f"--eval-fraction must be between 0 and 1, got {args.eval_fraction}", cli.EXIT_USAGE)
    try:
        if args.source is not None:
            prepare_from(args.source, args.out, args.seed, args.vocab_size, args.eval_fraction,
                         args.max_seq_len, quiet=args.quiet, strict=args.strict)
        else:
            prepare(args.persona or cli.DEFAULT_PERSONA, args.out,
                    60_000 if args.samples is None else args.samples, args.seed, args.vocab_size,
                    eval_fraction=args.eval_fraction, quiet=args.quiet)
    except (DataError, OSError) as err:  # a file that cannot be used
        return cli.error(err, cli.EXIT_FAILED)
    except (PersonaError, ValueError) as err:
        return cli.error(err, cli.EXIT_USAGE)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
