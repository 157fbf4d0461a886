"""Personality eval of a trained model: `python -m guppy_jax.eval --checkpoint DIR`.

Asks held-out prompts (never in the training data) and reports how many answers contain
an expected keyword, how many stay lowercase and short, plus the eval loss and perplexity
on the held-out conversations.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .prepare import DEFAULT_OUT as DEFAULT_DATA
from .prepare import REPO

DEFAULT_CASES = REPO / "data" / "personas" / "guppy_eval.toml"


@dataclass(frozen=True)
class Case:
    topic: str
    prompt: str
    keywords: tuple[str, ...]


def load_cases(path) -> tuple[list[Case], int]:
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    cases = []
    for i, c in enumerate(raw.get("cases", [])):
        if not c.get("prompt") or not c.get("keywords"):
            raise ValueError(f"{path}: case #{i + 1} needs a prompt and keywords")
        cases.append(Case(c.get("topic", "?"), c["prompt"], tuple(k.lower() for k in c["keywords"])))
    if not cases:
        raise ValueError(f"{path}: no [[cases]]")
    return cases, int(raw.get("max_words", 30))


def score_answer(answer: str, case: Case, max_words: int) -> dict:
    """A keyword hits when a word of the answer starts with it ("bubble" hits "bubbles";
    "hi" does not hit "this")."""
    words = answer.split()
    text = answer.lower()
    hit = any(re.search(r"\b" + re.escape(k), text) for k in case.keywords)
    return {"hit": hit, "lowercase": answer == answer.lower(), "short": 0 < len(words) <= max_words}


def eval_loss(cfg, params, tok, data_dir, batch_size: int = 32, max_batches: int = 50) -> float:
    """Mean cross-entropy per target token over the held-out conversations (padded rows)."""
    import jax

    from .data import Batches, encode_texts, load_texts, mean_eval_loss
    from .model import GuppyLM
    from .steps import eval_step, TrainState
    samples = encode_texts(tok, load_texts(Path(data_dir) / "eval.jsonl"), cfg.max_seq_len).samples
    batch_size = min(batch_size, len(samples))
    batches = Batches(samples, batch_size, cfg.max_seq_len, packed=False, shuffle=False)
    state = TrainState(step=0, apply_fn=GuppyLM(cfg).apply, params=params, tx=None, opt_state=None, lr_fn=None)
    return mean_eval_loss(jax.jit(eval_step), state, batches.one_pass(), max_batches)


def run_eval(run_dir, cases_path=DEFAULT_CASES, data_dir=DEFAULT_DATA, seed: int = 0,
             temperature: float = 0.0) -> dict:
    import jax

    from .chat import default_answer_len
    from .checkpoint import load_for_inference
    from .generate import generate
    from .tokenizer import decode, encode, format_prompt
    cfg, params, tok = load_for_inference(run_dir)
    cases, max_words = load_cases(cases_path)
    prompts = [encode(tok, format_prompt(c.prompt)) for c in cases]
    answers = generate(cfg, params, prompts, jax.random.key(seed), max_new_tokens=default_answer_len(cfg),
                       temperature=temperature, top_k=50)
    rows = []
    for case, ids in zip(cases, answers):
        text = decode(tok, ids).strip()
        rows.append({"topic": case.topic, "prompt": case.prompt, "answer": text,
                     **score_answer(text, case, max_words)})
    result = {"cases": len(rows), "keyword_hit_rate": sum(r["hit"] for r in rows) / len(rows),
              "lowercase_share": sum(r["lowercase"] for r in rows) / len(rows),
              "short_share": sum(r["short"] for r in rows) / len(rows), "max_words": max_words,
              "rows": rows}
    if (Path(data_dir) / "eval.jsonl").exists():
        loss = eval_loss(cfg, params, tok, data_dir)
        result.update(eval_loss=loss, perplexity=math.exp(loss))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guppy_jax.eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default="runs/guppy", help="run directory written by guppy_jax.train")
    p.add_argument("--cases", default=str(DEFAULT_CASES), help="TOML file of held-out prompts and keywords")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="directory with eval.jsonl for the loss")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy answers (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    from .checkpoint import CheckpointError
    try:
        result = run_eval(args.checkpoint, args.cases, args.data_dir, args.seed, args.temperature)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    width = max(len(r["prompt"]) for r in result["rows"])
    for r in result["rows"]:
        mark = "hit " if r["hit"] else "miss"
        print(f"{mark} {r['prompt']:<{width}}  {r['answer']}")
    print(f"\n{'keyword hit rate':<22}{result['keyword_hit_rate']:6.1%}  ({result['cases']} held-out prompts)")
    print(f"{'lowercase answers':<22}{result['lowercase_share']:6.1%}")
    print(f"{'short answers':<22}{result['short_share']:6.1%}  (<= {result['max_words']} words)")
    if "eval_loss" in result:
        print(f"{'eval loss':<22}{result['eval_loss']:6.3f}  (perplexity {result['perplexity']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
