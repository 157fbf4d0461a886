"""Talk to a trained Guppy: `python -m guppy_jax.chat`.

Interactive (You> / Guppy>) by default, or one answer with --prompt. Chat is single-turn,
as in the original: each message is answered on its own, because the 128-token window
leaves little room for history.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_RUN = Path("runs/guppy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m guppy_jax.chat", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_RUN), help="run directory written by guppy_jax.train")
    p.add_argument("--prompt", help="answer this one message and exit")
    p.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="longest answer, in tokens (default: 64, or half the context if that is smaller)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--latest", action="store_true", help="use the latest checkpoint, not the best-eval one")
    return p


def default_answer_len(cfg) -> int:
    """The original's 64 new tokens, or half the context for models with a short one."""
    return min(64, cfg.max_seq_len // 2)


class Chatter:
    """A loaded model plus its tokenizer; answers one message at a time."""

    def __init__(self, run_dir, *, temperature=0.7, top_k=50, top_p=1.0, max_new_tokens=None, seed=0,
                 best=True):
        import jax

        from .checkpoint import load_for_inference
        self.cfg, self.params, self.tok = load_for_inference(run_dir, best=best)
        if max_new_tokens is None:
            max_new_tokens = default_answer_len(self.cfg)
        if not 0 < max_new_tokens < self.cfg.max_seq_len:
            raise ValueError(f"--max-new-tokens must be in [1, {self.cfg.max_seq_len - 1}], got {max_new_tokens}")
        if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ValueError("need temperature >= 0, top-k >= 0 and 0 < top-p <= 1")
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens)
        self.prompt_len = self.cfg.max_seq_len - max_new_tokens
        self.key, self.turn = jax.random.key(seed), 0

    def answer(self, message: str) -> tuple[str, str | None]:
        """(answer, notice or None). A prompt longer than the context is cut from the left."""
        import jax

        from .generate import generate
        from .tokenizer import decode, encode, format_prompt
        ids = encode(self.tok, format_prompt(message))
        notice = None
        if len(ids) > self.prompt_len:
            notice = (f"(your message is {len(ids)} tokens with the chat template; only its last "
                      f"{self.prompt_len} fit the {self.cfg.max_seq_len}-token context)")
        out = generate(self.cfg, self.params, [ids], jax.random.fold_in(self.key, self.turn),
                       prompt_len=self.prompt_len, **self.sampling)[0]
        self.turn += 1
        return decode(self.tok, out).strip(), notice


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    run_dir = Path(args.checkpoint)
    if not (run_dir / "config.json").exists():
        print(f"no trained model in {run_dir}. Train one first:\n  python -m guppy_jax.train --out {run_dir}\n"
              f"or import an original GuppyLM checkpoint:\n  python -m guppy_jax.convert import "
              f"best_model.pt --out {run_dir}", file=sys.stderr)
        return 1
    try:
        chatter = Chatter(run_dir, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, seed=args.seed, best=not args.latest)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    def reply(message):
        text, notice = chatter.answer(message)
        if notice:
            print(notice, file=sys.stderr)
        print(f"Guppy> {text}", flush=True)

    if args.prompt is not None:
        reply(args.prompt)
        return 0
    print("Talk to Guppy (empty line, 'quit' or Ctrl-D to leave).")
    while True:
        try:
            message = input("You> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if not message or message.lower() in ("quit", "exit"):
            return 0
        reply(message)


if __name__ == "__main__":
    sys.exit(main())
