"""How people type: the same words with other casing, punctuation and small typos.

Used twice: `persona.py` rewrites part of the generated user prompts at random, so a model
learns that "Hi Guppy!" and "hi guppy" mean the same; `evaluation.py` writes each held-out
prompt in the fixed variants of `EVAL_VARIANTS` and reports the hit rate of each.
"""
from __future__ import annotations

import random
import re

# The eval's ways of writing a prompt, in report order.
EVAL_VARIANTS = ("lowercase", "capitalised?", "CAPS!", "typo")
_TRAILING = re.compile(r"[\s.!?,;:]+$")
_WORD = re.compile(r"[A-Za-z]+")
_LONE_I = re.compile(r"\bi\b")


def bare(text: str) -> str:
    """The words only: lowercase, no end punctuation (what two writings of a prompt share)."""
    return _TRAILING.sub("", text.strip()).lower()


def capitalise(text: str, end: str = "", names=()) -> str:
    """"hi guppy" -> "Hi Guppy!": a capital first letter, a capital "I" and capital `names`,
    then an end mark."""
    text = _LONE_I.sub("I", bare(text))
    for name in names:
        text = re.sub(rf"\b{re.escape(name.lower())}\b", name[:1].upper() + name[1:].lower(), text)
    return text[:1].upper() + text[1:] + end


def shout(text: str, end: str = "!") -> str:
    return bare(text).upper() + end


def typo(text: str, rng: random.Random | None = None) -> str:
    """One small slip in one word of 4+ letters: two letters swapped, one dropped or one
    doubled. A slip comes with a keystroke, so a word is picked in proportion to its
    length. Without `rng`, the same slip every time: the longest word's 2nd and 3rd
    letters swapped ("purpose" -> "prupose")."""
    words = [m for m in _WORD.finditer(text) if len(m.group()) >= 4]
    if not words:
        return text
    if rng is None:
        word, kind, at = max(words, key=lambda m: len(m.group())), "swap", 1
    else:
        word = rng.choices(words, weights=[len(m.group()) for m in words])[0]
        kind = rng.choice(("swap", "drop", "double"))
        at = rng.randrange(1, len(word.group()) - 2)
    w = word.group()
    if kind == "swap" and w[at] == w[at + 1]:
        kind = "drop"  # swapping two equal letters would change nothing
    slipped = {"swap": w[:at] + w[at + 1] + w[at] + w[at + 2:], "drop": w[:at] + w[at + 1:],
               "double": w[:at + 1] + w[at] + w[at + 1:]}[kind]
    return text[:word.start()] + slipped + text[word.end():]


def write_as(text: str, variant: str) -> str:
    """A prompt written one of the eval's ways."""
    if variant == "lowercase":
        return text
    if variant == "capitalised?":
        return capitalise(text, "?")
    if variant == "CAPS!":
        return shout(text, "!")
    if variant == "typo":
        return typo(text)
    raise ValueError(f"unknown writing variant {variant!r}: choose one of {', '.join(EVAL_VARIANTS)}")


def vary(text: str, rng: random.Random, names=()) -> str:
    """The same prompt as some person might type it: capitalised (`names` too) or in
    capitals, with or without an end mark, sometimes with a typo."""
    style = rng.random()
    if style < 0.45:
        out = capitalise(text, rng.choice(("?", "?", ".", "!", "")), names)
    elif style < 0.65:
        out = shout(text, rng.choice(("!", "?", "")))
    else:
        out = bare(text) + rng.choice(("?", "!", "...", " :)", ""))
    return typo(out, rng) if rng.random() < 0.35 else out
