"""Personas as data, and the synthetic conversations generated from them.

A persona file (TOML) has `name`, optional `assistant` and `description`, a `[pools]`
table of named word lists, and `[[topics]]`, each with `name`, `prompts` and
`responses`; optional `tails` are second sentences appended to a response with
probability `tail_probability` (default 0.5); `user_variation` (default 0) is the share of
user prompts rewritten the way people type them (capitals, end marks, a typo: see
`guppy_jax.writing`), so a model also understands "Hi Guppy!", and `user_typos` (default 0)
the share given one more small typo (a letter swapped, dropped or doubled). A `{slot}` in a
prompt or response draws from the pool of that name. A slot used in the prompt keeps its
value in the response ("do you know {human_thing}" -> "i do not know {human_thing}"); other
response slots draw afresh each time.
"""
from __future__ import annotations

import json
import random
import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .writing import typo, vary

SLOT = re.compile(r"\{(\w+)\}")


class PersonaError(ValueError):
    """A persona file that cannot generate conversations."""


@dataclass(frozen=True)
class Topic:
    name: str
    prompts: tuple[str, ...]
    responses: tuple[str, ...]


@dataclass(frozen=True)
class Persona:
    name: str
    assistant: str
    description: str
    pools: dict
    topics: tuple[Topic, ...]
    tails: tuple[str, ...] = ()  # optional second sentences, appended with tail_probability
    tail_probability: float = 0.0
    user_variation: float = 0.0  # share of user prompts rewritten as people type (guppy_jax.writing)
    user_typos: float = 0.0      # share of user prompts given one more small typo


def _strings(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise PersonaError(f"{where}: must be a non-empty list of strings")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise PersonaError(f"{where}[{i}]: must be a non-empty string, got {item!r}")
    return tuple(value)


def _check_slots(template: str, pools: dict, where: str) -> None:
    """Every {slot} names a pool, and no brace is left that is not part of a slot
    ("{no-such}" or an unclosed "{food" would go verbatim into the training data)."""
    for slot in SLOT.findall(template):
        if slot not in pools:
            raise PersonaError(f"{where}: unknown slot {{{slot}}} (pools: {', '.join(sorted(pools))})")
    if "{" in SLOT.sub("", template) or "}" in SLOT.sub("", template):
        raise PersonaError(f"{where}: a brace that is not a {{slot}} (slots are {{name}}, letters, digits "
                           f"and _ only)")


def parse_persona(raw: dict, source: str = "persona") -> Persona:
    for key in ("name", "pools", "topics"):
        if key not in raw:
            raise PersonaError(f"{source}: missing field {key!r}")
    if not isinstance(raw["pools"], dict):
        raise PersonaError(f"{source}: [pools] must be a table of word lists")
    pools = {name: _strings(words, f"{source}: pool {name!r}") for name, words in raw["pools"].items()}
    if not isinstance(raw["topics"], list) or not raw["topics"]:
        raise PersonaError(f"{source}: needs at least one [[topics]] entry")
    topics, seen = [], set()
    for i, entry in enumerate(raw["topics"]):
        if not isinstance(entry, dict):
            raise PersonaError(f"{source}: topic #{i + 1} is not a table")
        for key in ("name", "prompts", "responses"):
            if key not in entry:
                label = entry.get("name", f"#{i + 1}")
                raise PersonaError(f"{source}: topic {label!r}: missing field {key!r}")
        name = entry["name"]
        if name in seen:
            raise PersonaError(f"{source}: topic {name!r} appears twice")
        seen.add(name)
        topic = Topic(name, _strings(entry["prompts"], f"{source}: topic {name!r} prompts"),
                      _strings(entry["responses"], f"{source}: topic {name!r} responses"))
        for kind, templates in (("prompt", topic.prompts), ("response", topic.responses)):
            for template in templates:
                _check_slots(template, pools, f"{source}: topic {name!r}, {kind} {template!r}")
        topics.append(topic)
    tails = _strings(raw["tails"], f"{source}: tails") if "tails" in raw else ()
    for template in tails:
        _check_slots(template, pools, f"{source}: tail {template!r}")
    chance = _probability(raw, "tail_probability", 0.5 if tails else 0.0, source)
    variation = _probability(raw, "user_variation", 0.0, source)
    typos = _probability(raw, "user_typos", 0.0, source)
    return Persona(raw["name"], raw.get("assistant", raw["name"]), raw.get("description", ""),
                   pools, tuple(topics), tails, chance, variation, typos)


def _probability(raw: dict, key: str, default: float, source: str) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PersonaError(f"{source}: {key} must be a number in [0, 1], got {value!r}")
    return float(value)


def load_persona(path) -> Persona:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersonaError(f"persona file not found: {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise PersonaError(f"{path}: not valid TOML: {err}") from None
    return parse_persona(raw, str(path))


def _fill(template: str, pools: dict, bound: dict, rng: random.Random) -> str:
    def pick(match):
        slot = match.group(1)
        return bound[slot] if slot in bound else rng.choice(pools[slot])
    return SLOT.sub(pick, template)


def conversations(persona: Persona, n: int, seed: int) -> list[dict]:
    """n records {"input", "output", "category"}, topics as equal as n allows, shuffled."""
    rng = random.Random(seed)
    order = [persona.topics[i % len(persona.topics)] for i in range(n)]
    rng.shuffle(order)
    records = []
    for topic in order:
        prompt = rng.choice(topic.prompts)
        bound = {slot: rng.choice(persona.pools[slot]) for slot in SLOT.findall(prompt)}
        output = _fill(rng.choice(topic.responses), persona.pools, bound, rng)
        if persona.tails and rng.random() < persona.tail_probability:
            output += " " + _fill(rng.choice(persona.tails), persona.pools, bound, rng)
        user = _fill(prompt, persona.pools, bound, rng)
        if persona.user_variation and rng.random() < persona.user_variation:
            user = vary(user, rng, names=(persona.assistant,))
        if persona.user_typos and rng.random() < persona.user_typos:
            user = typo(user, rng)
        records.append({"input": user, "output": output, "category": topic.name})
    return records


def split(records: list[dict], eval_fraction: float = 0.05) -> tuple[list[dict], list[dict]]:
    """The last eval_fraction of the (already shuffled) records are held out."""
    n_eval = max(1, round(len(records) * eval_fraction)) if len(records) > 1 else 0
    return records[:len(records) - n_eval], records[len(records) - n_eval:]


def write_jsonl(path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")


def summarize(records: list[dict]) -> dict:
    counts = Counter(r["category"] for r in records)
    unique = len({r["output"] for r in records})
    return {"samples": len(records), "topics": len(counts), "per_topic": dict(sorted(counts.items())),
            "unique_outputs": unique, "unique_share": unique / max(len(records), 1)}
