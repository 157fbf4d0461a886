"""Talk to a trained Guppy: `python -m guppy_jax.chat`.

Interactive (You> / Guppy>) by default, or one answer with --prompt; messages can also be
piped in, one a line. With --quiet it prints the answers alone. Chat is
single-turn, as in the original: each message is answered on its own, because the
128-token window leaves little room for history.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import cli


def build_parser():
    p = cli.make_parser("chat", __doc__)
    cli.add_run_dir(p, "run directory written by guppy_jax.train", "--checkpoint")
    p.add_argument("--prompt", help="answer this one message and exit")
    p.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest answer, in tokens (default: 64, or half the context if that is smaller)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--latest", action="store_true", help="use the latest checkpoint, not the best-eval one")
    cli.add_quiet(p)
    return p


def answer_len_problem(max_new_tokens: int, cfg) -> str | None:
    """Why `max_new_tokens` does not fit a model of `cfg` (a ModelConfig), or None: the
    prompt needs at least one token of the context."""
    if not 0 < max_new_tokens < cfg.max_seq_len:
        return f"--max-new-tokens must be in [1, {cfg.max_seq_len - 1}] for this model, got {max_new_tokens}"
    return None


class Chatter:
    """A loaded model plus its tokenizer; answers one message at a time."""

    def __init__(self, run_dir, *, temperature=0.7, top_k=50, top_p=1.0, max_new_tokens=None, seed=0,
                 best=True):
        import jax

        from .training.checkpoints import load_for_inference
        from .export.compiled_sampler import sampler
        from .core.generate import check_sampling, default_answer_len
        check_sampling(temperature, top_k, top_p)
        self.notes: list[str] = []  # checkpoints skipped as unreadable
        self.cfg, self.params, self.tok = load_for_inference(run_dir, best=best, notes=self.notes)
        if max_new_tokens is None:
            max_new_tokens = default_answer_len(self.cfg)
        problem = answer_len_problem(max_new_tokens, self.cfg)
        if problem:
            raise ValueError(problem)
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens)
        self.prompt_len = self.cfg.max_seq_len - max_new_tokens
        self.key, self.turn = jax.random.key(seed), 0
        self.sampler = sampler(self.cfg, 1, self.prompt_len, max_new_tokens)  # loaded, compiled, when cached

    def answer(self, message: str) -> tuple[str, str | None]:
        """(answer, notice or None). A prompt longer than the context is cut from the left."""
        import jax

        from .core.generate import generate
        from .core.tokenizer import decode, encode, format_prompt
        ids = encode(self.tok, format_prompt(message))
        notice = None
        if len(ids) > self.prompt_len:
            notice = (f"(your message is {len(ids)} tokens with the chat template; only its last "
                      f"{self.prompt_len} fit the {self.cfg.max_seq_len}-token context)")
        out = generate(self.cfg, self.params, [ids], jax.random.fold_in(self.key, self.turn),
                       prompt_len=self.prompt_len, sampler=self.sampler, **self.sampling)[0]
        self.turn += 1
        return decode(self.tok, out).strip(), notice


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .training.checkpoints import CheckpointError, describe_missing_config, read_run_config
    from .core.generate import check_sampling
    # every flag is checked before the weights are loaded: a bad one is a usage error (2)
    try:
        check_sampling(args.temperature, args.top_k, args.top_p)
    except ValueError as err:
        return cli.error(err, cli.EXIT_USAGE)
    problem = cli.seed_problem(args.seed)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        problem = f"--max-new-tokens must be at least 1, got {args.max_new_tokens}"
    if problem:
        return cli.error(problem, cli.EXIT_USAGE)
    run_dir = Path(args.run_dir)
    missing = describe_missing_config(run_dir)  # checkpoints without their config.json
    if missing:
        return cli.error(missing)
    if not (run_dir / "config.json").exists():
        return cli.error(f"no trained model in {run_dir}. Train one first:\n  python -m guppy_jax.train "
                         f"--run-dir {run_dir}\nor import an original GuppyLM checkpoint:\n  python -m "
                         f"guppy_jax.convert import best_model.pt --run-dir {run_dir}")
    try:
        model = read_run_config(run_dir).model  # the config alone: the answer length's bound
    except CheckpointError as err:
        return cli.error(err)
    problem = args.max_new_tokens is not None and answer_len_problem(args.max_new_tokens, model)
    if problem:
        return cli.error(problem, cli.EXIT_USAGE)
    try:
        chatter = Chatter(run_dir, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, best=not args.latest)
    except (CheckpointError, ValueError, OSError) as err:
        return cli.error(err)
    for note in chatter.notes:
        print(f"note: {note}", file=sys.stderr)

    def reply(message):
        text, notice = chatter.answer(message)
        if notice and not args.quiet:
            print(notice, file=sys.stderr)
        print(text if args.quiet else f"Guppy> {text}", flush=True)  # --quiet: the answer alone

    if args.prompt is not None:
        reply(args.prompt)
        return cli.EXIT_OK
    return converse(reply, args.quiet)


def converse(reply, quiet: bool) -> int:
    """Answer each line of stdin (a terminal or a pipe) until 'quit', 'exit' or end of input.
    Blank lines are skipped; bytes that are not UTF-8 are replaced, not fatal. `quiet`: no
    greeting, no You> prompt and no newline at the end, so the output is the answers alone."""
    if sys.stdin is None or sys.stdin.closed:
        return cli.error("no input to read (stdin is closed): pass --prompt, or pipe messages in", cli.EXIT_USAGE)
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    if not quiet:
        print("Talk to Guppy ('quit' or Ctrl-D to leave).")
    while True:
        try:
            message = input("" if quiet else "You> ").strip()
        except (EOFError, KeyboardInterrupt):
            if not quiet:
                print()  # end the You> line the user left
            return cli.EXIT_OK
        except (OSError, ValueError, RuntimeError):  # stdin went away mid-conversation
            return cli.EXIT_OK
        if not message:
            continue
        if message.lower() in ("quit", "exit"):
            return cli.EXIT_OK
        reply(message)


if __name__ == "__main__":
    cli.run(main, fast_exit=True)  # nothing writes in the background: skip interpreter teardown
