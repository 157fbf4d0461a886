"""The personality eval: held-out prompts, keyword hits, voice checks, held-out loss.

The prompts (`data/personas/guppy_eval.toml`) are never in the training data. Each is asked
as written and as people type it (`guppy_jax.writing.EVAL_VARIANTS`: capitalised with '?',
in capitals with '!', with a typo), and the hit rate is reported per variant. An answer
hits when one of its words starts with an expected keyword; it keeps the voice when it
is lowercase and short.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..core.paths import DEFAULT_CASES, DEFAULT_DATA
from ..data.writing import EVAL_VARIANTS, write_as


@dataclass(frozen=True)
class Case:
    topic: str
    prompt: str
    keywords: tuple[str, ...]


def load_cases(path) -> tuple[list[Case], int]:
    """The held-out cases of a TOML file and its max_words; ValueError naming the file when
    it is missing, unreadable or not a cases file."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the eval cases: {err.strerror or err}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a valid TOML file of eval cases ({err})") from None
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


def eval_loss(cfg, params, tok, data_dir, batch_size: int = 32, max_batches: int = 50, texts=None) -> float:
    """Mean cross-entropy per target token over the held-out conversations (padded rows):
    `texts`, or those of data_dir/eval.jsonl."""
    from ..data.batches import Batches, encode_texts, load_texts, mean_eval_loss
    from ..core.model import GuppyLM
    from ..core.steps import make_eval_step
    if texts is None:
        texts = load_texts(Path(data_dir) / "eval.jsonl")
    samples = encode_texts(tok, texts, cfg.max_seq_len).samples
    batch_size = min(batch_size, len(samples))
    batches = Batches(samples, batch_size, cfg.max_seq_len, packed=False, shuffle=False)
    return mean_eval_loss(make_eval_step(GuppyLM(cfg).apply), params, batches.one_pass(), max_batches)


def shares(rows: list[dict]) -> dict:
    """Keyword hit rate and the lowercase and short shares of some scored answers."""
    n = max(len(rows), 1)
    return {"keyword_hit_rate": sum(r["hit"] for r in rows) / n,
            "lowercase_share": sum(r["lowercase"] for r in rows) / n,
            "short_share": sum(r["short"] for r in rows) / n}


def summarize_rows(rows: list[dict], variants, max_words: int) -> dict:
    """The hit rate of the prompts as written (`keyword_hit_rate`), each variant's scores,
    and the voice over every answer."""
    per_variant = {v: shares([r for r in rows if r["variant"] == v]) for v in variants}
    overall = shares(rows)
    return {"cases": sum(r["variant"] == variants[0] for r in rows), "answers": len(rows),
            "keyword_hit_rate": per_variant[variants[0]]["keyword_hit_rate"],
            "lowercase_share": overall["lowercase_share"], "short_share": overall["short_share"],
            "max_words": max_words, "variants": per_variant, "rows": rows}


def run_eval(run_dir, cases_path=DEFAULT_CASES, data_dir=DEFAULT_DATA, seed: int = 0,
             temperature: float = 0.0, variants=EVAL_VARIANTS) -> dict:
    """Answers to every case in every writing variant (greedy by default), their scores, and
    the held-out loss when the data directory has an eval.jsonl. The cases and the held-out
    conversations are read (and checked) before the model is loaded."""
    import jax

    from ..training.checkpoints import load_for_inference
    from ..data.batches import load_texts
    from ..core.generate import default_answer_len, generate
    from ..core.tokenizer import decode, encode, format_prompt
    cases, max_words = load_cases(cases_path)
    held_out = Path(data_dir) / "eval.jsonl"
    held_out_texts = load_texts(held_out) if held_out.exists() else None
    cfg, params, tok = load_for_inference(run_dir)
    asked = [(variant, case, write_as(case.prompt, variant)) for variant in variants for case in cases]
    prompts = [encode(tok, format_prompt(text)) for _, _, text in asked]
    answers = generate(cfg, params, prompts, jax.random.key(seed), max_new_tokens=default_answer_len(cfg),
                       temperature=temperature, top_k=50)
    rows = []
    for (variant, case, text), ids in zip(asked, answers):
        answer = decode(tok, ids).strip()
        rows.append({"topic": case.topic, "variant": variant, "prompt": text, "answer": answer,
                     **score_answer(answer, case, max_words)})
    result = summarize_rows(rows, tuple(variants), max_words)
    if held_out_texts is not None:
        loss = eval_loss(cfg, params, tok, data_dir, texts=held_out_texts)
        result.update(eval_loss=loss, perplexity=math.exp(loss))
    return result
