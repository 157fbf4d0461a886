"""Look inside the model: `python -m guppy_jax.inspect --prompt "what is the meaning of life"`.

Draws every layer's and every head's attention map for the prompt as one PNG grid, computed
by JAX and by the PyTorch reference from the same weights (their max |diff| is in the
title), and prints, per position, the likeliest next tokens. With no trained run in the
default run directory it uses random guppy-9m weights and says so.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import cli


def build_parser():
    p = cli.make_parser("inspect", __doc__)
    p.add_argument("--prompt", default="what is the meaning of life", help="the message to look at")
    cli.add_run_dir(p, "run directory written by guppy_jax.train (when the default one holds no run: "
                       "random weights)")
    cli.add_data_dir(p, "prepared data directory whose tokenizer is used when there is no run")
    p.add_argument("--out", default="attention.png", help="where to write the PNG grid")
    p.add_argument("--top", type=cli.positive_int, default=3, help="next-token candidates shown per position")
    p.add_argument("--raw", action="store_true",
                   help="take the prompt as it is, without the chat template around it")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights used when there is no run")
    cli.add_quiet(p)
    return p


def print_candidates(maps, tok, top: int) -> None:
    from .analysis.attention_maps import top_candidates, token_labels
    width = max(len(label) for label in maps.labels)
    print(f"{'pos':>3}  {'token':<{width}}  likeliest next tokens")
    for t, cands in enumerate(top_candidates(maps.probs_TV, top)):
        shown = ", ".join(f"'{token_labels(tok, [i])[0]}' {p:.3f}" for i, p in cands)
        print(f"{t:>3}  {maps.labels[t]:<{width}}  {shown}")


def title(maps, prompt: str, note: str | None) -> str:
    diff = maps.max_diff
    compared = ("PyTorch reference not installed" if diff is None
                else f"JAX vs PyTorch max |diff| = {diff:.2e}")
    weights = "random weights (no trained run)" if note else "trained weights"
    return f"attention of {prompt!r}, {weights}; {compared}"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.prompt.strip():
        return cli.error("the prompt is empty: pass --prompt with some text", cli.EXIT_USAGE)
    run_dir = Path(args.run_dir)
    if not (run_dir / "config.json").exists() and run_dir.resolve() != cli.DEFAULT_RUN.resolve():
        return cli.error(f"no run in {run_dir} (no config.json): pass a directory written by "
                         f"guppy_jax.train, or leave --run-dir out for random weights", cli.EXIT_USAGE)
    from .analysis.attention_maps import PromptError, inspect_prompt, load_weights, token_labels
    from .training.checkpoints import CheckpointError
    from .training.plots import plot_attention
    from .core.tokenizer import encode, format_prompt
    try:
        cfg, params, tok, note = load_weights(run_dir, args.data_dir, args.seed, args.quiet)
    except (CheckpointError, ValueError, OSError) as err:
        return cli.error(err)
    if note:
        print(f"note: {note}", file=sys.stderr)
    ids = encode(tok, args.prompt if args.raw else format_prompt(args.prompt))
    try:
        maps = inspect_prompt(cfg, params, ids, token_labels(tok, ids))
    except PromptError as err:
        return cli.error(err, cli.EXIT_USAGE)
    png = plot_attention(maps.jax_LHTT, maps.labels, args.out, title(maps, args.prompt, note))
    if not args.quiet:
        print_candidates(maps, tok, args.top)
    diff = maps.max_diff
    print(f"wrote {png} ({cfg.n_layers} layers x {cfg.n_heads} heads, {len(ids)} tokens); "
          + ("no PyTorch reference to compare with" if diff is None else f"JAX vs PyTorch max |diff| {diff:.2e}"))
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
