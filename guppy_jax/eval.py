"""Personality eval of a trained model: `python -m guppy_jax.eval --run-dir DIR`.

Asks held-out prompts (never in the training data), each as written and as people type it
(capitalised with '?', in capitals with '!', with a typo), and reports how many answers
contain an expected keyword (per writing variant), how many stay lowercase and short, plus
the eval loss and perplexity on the held-out conversations.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import cli
from .cli import DEFAULT_CASES
from .analysis.personality import Case, load_cases, run_eval, score_answer
from .data.writing import EVAL_VARIANTS

__all__ = ["build_parser", "main", "Case", "load_cases", "run_eval", "score_answer", "DEFAULT_CASES"]


def build_parser():
    p = cli.make_parser("eval", __doc__)
    cli.add_run_dir(p, "run directory written by guppy_jax.train", "--checkpoint")
    p.add_argument("--cases", default=str(DEFAULT_CASES), help="TOML file of held-out prompts and keywords")
    cli.add_data_dir(p, "directory with eval.jsonl for the held-out loss (skipped if it has none)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy answers (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", choices=EVAL_VARIANTS, default=list(EVAL_VARIANTS),
                   help="ways of writing each prompt (the first is the headline hit rate)")
    p.add_argument("--json", help="also write the results to this file")
    cli.add_quiet(p)
    return p


def print_result(result: dict, quiet: bool) -> None:
    if not quiet:
        width = max(len(r["prompt"]) for r in result["rows"])
        for r in result["rows"]:
            print(f"{'hit ' if r['hit'] else 'miss'} {r['prompt']:<{width}}  {r['answer']}")
        print()
    variants = result["variants"]
    first = next(iter(variants))
    print(f"{'keyword hit rate':<22}{result['keyword_hit_rate']:6.1%}  ({result['cases']} held-out prompts, "
          f"{first})")
    print("by writing variant    " + ", ".join(f"{name} {v['keyword_hit_rate']:.1%}" for name, v in variants.items()))
    print(f"{'lowercase answers':<22}{result['lowercase_share']:6.1%}  (of {result['answers']} answers)")
    print(f"{'short answers':<22}{result['short_share']:6.1%}  (<= {result['max_words']} words)")
    if "eval_loss" in result:
        print(f"{'eval loss':<22}{result['eval_loss']:6.3f}  (perplexity {result['perplexity']:.2f})")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # every flag is checked before the work: a bad one is a usage error (2), found at once
    if not args.temperature >= 0:
        return cli.error(f"--temperature must be >= 0, got {args.temperature}", cli.EXIT_USAGE)
    problem = cli.seed_problem(args.seed) or (args.json and cli.output_file_problem(args.json, "--json"))
    if problem:
        return cli.error(problem, cli.EXIT_USAGE)
    from .training.checkpoints import CheckpointError
    try:
        result = run_eval(args.run_dir, args.cases, args.data_dir, args.seed, args.temperature,
                          tuple(args.variants))
    except (CheckpointError, ValueError, OSError) as err:
        return cli.error(err)
    print_result(result, args.quiet)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        except OSError as err:  # the disk filled up, or the folder went away, during the eval
            return cli.error(f"could not write {args.json}: {err.strerror or err} (the results are printed above)")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main, fast_exit=True)  # nothing writes in the background: skip interpreter teardown
