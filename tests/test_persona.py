"""The persona files and the generator."""
import functools
import inspect
import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from guppy_jax.data.datadir import prepare
from guppy_jax.data.persona import SLOT, PersonaError, conversations, load_persona, parse_persona, split, summarize

PERSONAS = Path(__file__).resolve().parent.parent / "data" / "personas"
GUPPY = load_persona(PERSONAS / "guppy.toml")
RAW_GUPPY = tomllib.loads((PERSONAS / "guppy.toml").read_text(encoding="utf-8"))


def test_guppy_has_sixty_topics_with_prompts_and_responses():
    assert len(GUPPY.topics) == 60
    assert all(len(t.prompts) >= 3 and len(t.responses) >= 2 for t in GUPPY.topics)


def test_generation_is_deterministic_and_seed_dependent():
    assert conversations(GUPPY, 500, seed=3) == conversations(GUPPY, 500, seed=3)
    assert conversations(GUPPY, 500, seed=3) != conversations(GUPPY, 500, seed=4)


def test_topics_are_balanced():
    counts = summarize(conversations(GUPPY, 6000, seed=0))["per_topic"]
    assert len(counts) == 60 and set(counts.values()) == {100}
    uneven = summarize(conversations(GUPPY, 6007, seed=0))["per_topic"]
    assert max(uneven.values()) - min(uneven.values()) == 1


def test_unique_share_at_least_the_originals_quarter():
    assert summarize(conversations(GUPPY, 20_000, seed=0))["unique_share"] >= 0.25


def test_every_template_renders_without_leftover_slots():
    records = conversations(GUPPY, 30_000, seed=1)
    used = {(r["category"], r["output"].split(". ")[0]) for r in records}
    assert len(used) > 100
    for r in records:
        assert not SLOT.search(r["input"]) and not SLOT.search(r["output"]), r
    # every prompt template of every topic was drawn at least once
    for topic in GUPPY.topics:
        inputs = {r["input"] for r in records if r["category"] == topic.name}
        for prompt in topic.prompts:
            pattern = re.escape(prompt)
            for slot in set(SLOT.findall(prompt)):
                pattern = pattern.replace(re.escape("{" + slot + "}"), ".+")
            assert any(re.fullmatch(pattern, i) for i in inputs), (topic.name, prompt)


def test_prompt_slot_value_carries_into_response():
    as_written = parse_persona({**RAW_GUPPY, "user_variation": 0, "user_typos": 0})  # no capitals or typos in the way
    for r in conversations(as_written, 3000, seed=2):
        if r["category"] == "human things" and r["output"].startswith("i do not know "):
            thing = r["output"][len("i do not know "):].split(".")[0]
            assert thing in r["input"], r


def test_guppy_character():
    records = conversations(GUPPY, 6000, seed=0)
    life = [r["output"] for r in records if r["category"] == "meaning of life"]
    assert life and all("food" in o for o in life)
    assert all(r["output"] == r["output"].lower() for r in records)


def test_split_holds_out_five_percent():
    train, held = split(conversations(GUPPY, 1000, seed=0))
    assert (len(train), len(held)) == (950, 50)


BASE = {"name": "x", "pools": {"food": ["a", "b"]},
        "topics": [{"name": "eat", "prompts": ["hi"], "responses": ["i like {food}"]}]}


@pytest.mark.parametrize("change, words", [
    (lambda d: d["topics"][0].update(responses=["i like {drink}"]), "topic 'eat', response 'i like {drink}': unknown slot {drink}"),
    (lambda d: d["topics"][0].update(prompts=["do you like {snow}"]), "topic 'eat', prompt 'do you like {snow}': unknown slot"),
    (lambda d: d["pools"].update(food=[]), "pool 'food': must be a non-empty list"),
    (lambda d: d["topics"][0].pop("responses"), "topic 'eat': missing field 'responses'"),
    (lambda d: d.pop("topics"), "missing field 'topics'"),
    (lambda d: d["topics"].append(dict(d["topics"][0])), "topic 'eat' appears twice"),
    (lambda d: d.update(tails=["{nope}"]), "tail '{nope}': unknown slot"),
])
def test_bad_persona_is_rejected_with_topic_and_template(change, words):
    raw = json.loads(json.dumps(BASE))
    change(raw)
    with pytest.raises(PersonaError) as err:
        parse_persona(raw)
    assert words in str(err.value)


def test_user_prompts_are_written_as_people_type_and_answers_stay_lowercase():
    from guppy_jax.data.writing import bare
    records = conversations(GUPPY, 6000, seed=5)
    varied = [r["input"] for r in records if r["input"] != r["input"].lower() or r["input"][-1:] in "?!.):"]
    assert 0.35 < len(varied) / len(records) < 0.6, len(varied)  # user_variation = 0.5, some vary to lowercase
    assert any(i.isupper() for i in varied) and any(i[:1].isupper() and not i.isupper() for i in varied)
    assert any("Guppy" in i for i in varied)
    assert all(r["output"] == r["output"].lower() for r in records)
    plain = conversations(parse_persona({**RAW_GUPPY, "user_variation": 0}), 600, seed=5)
    assert all(r["input"] == bare(r["input"]) for r in plain)  # nothing varied at 0


def test_user_typos_give_that_share_of_prompts_one_small_slip():
    one_prompt = {**BASE, "topics": [{"name": "ask", "prompts": ["do you like bubbles"], "responses": ["yes"]}]}
    for share in (0.0, 0.3, 1.0):
        inputs = [r["input"] for r in conversations(parse_persona({**one_prompt, "user_typos": share}), 2000, seed=1)]
        slipped = [i for i in inputs if i != "do you like bubbles"]
        assert abs(len(slipped) / len(inputs) - share) < 0.04, (share, len(slipped))
        for i in slipped:  # one letter swapped, dropped or doubled in one word of 4+ letters
            assert abs(len(i) - len("do you like bubbles")) <= 1 and set(i) <= set("do you like bubbles"), i


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_user_variation_must_be_a_probability(value):
    with pytest.raises(PersonaError, match="user_variation must be a number in"):
        parse_persona({**RAW_GUPPY, "user_variation": value}, "p.toml")


# The text the personas generate: no slips of grammar that a model would learn. Each test
# reads the whole default data set (`prepare`'s samples and seed), Guppy and Mochi.
DETERMINERS = ("my", "your", "a", "an", "the", "this", "that", "some")
_DET = "|".join(DETERMINERS)
# "my the red pellets", "the the", "a the": a determiner straight after another. "this"/"that"
# after "is"/"was" is a pronoun, not a determiner ("is that your friend", "Is that the string?").
DOUBLED_DETERMINER = re.compile(
    rf"\b(?:my|your|an?|the|some|(?<!\bis )(?<!\bwas )(?:this|that))\s+(?:{_DET})\b", re.IGNORECASE)
# "a okay tank", "an pellet"; "more a pellet", "a lot of the red pellets", "a little a pea":
# a pool entry that brings its own determiner, put after a word that wants a bare noun.
ARTICLE_SLIP = re.compile(rf"\ba\s+[aeiou]\w*|\ban\s+[b-df-hj-np-tv-z]\w*"
                          rf"|\b(?:more|a lot of|a little)\s+(?:{_DET})\b", re.IGNORECASE)


@functools.cache
def default_set(name: str) -> tuple[dict, ...]:
    defaults = inspect.signature(prepare).parameters
    return tuple(conversations(load_persona(PERSONAS / f"{name}.toml"), defaults["samples"].default,
                          defaults["seed"].default))


def _slips(name: str, pattern: re.Pattern) -> list[str]:
    return [f"{r['category']!r} {field}: {r[field]!r}" for r in default_set(name)
            for field in ("input", "output") if pattern.search(r[field])]


def _report(slips: list[str], pattern: re.Pattern, name: str) -> str:
    pairs = Counter(m.group(0).lower() for s in slips for m in pattern.finditer(s.split(": ", 1)[1]))
    return (f"{len(slips)} {name} samples with a slip ({dict(pairs.most_common())}), e.g.\n  "
            + "\n  ".join(slips[:20]))


@pytest.mark.parametrize("name", ["guppy", "mochi"])
def test_no_doubled_or_clashing_determiner_in_the_default_set(name):
    slips = _slips(name, DOUBLED_DETERMINER)
    assert not slips, _report(slips, DOUBLED_DETERMINER, name)


@pytest.mark.parametrize("name", ["guppy", "mochi"])
def test_no_article_slip_in_the_default_set(name):
    slips = _slips(name, ARTICLE_SLIP)
    assert not slips, _report(slips, ARTICLE_SLIP, name)


def _plural(phrase: str) -> bool:
    """A pool entry's number, by its head noun: "my tail and fins", "bloodworms", "tiny shrimp"
    are plural; "a crumb of something", "the neighbor's dog" singular. A rough rule for pools."""
    words = phrase.lower().split()
    if "and" in words:
        return True
    if words[0] in ("a", "an", "whatever"):  # "a brine shrimp"; "whatever sinks" is one thing
        return False
    head = words[words.index("of") - 1] if "of" in words else words[-1]
    return head in ("shrimp", "fish") or (head.endswith("s") and not head.endswith("ss"))


_NOT_VERBS = {"always", "sometimes", "perhaps", "plus", "thus", "towards", "across", "unless", "besides"}
_PLURAL_VERBS = {"are", "were", "have", "do", "say", "go", "need", "work", "agree"}
_PREPOSITIONS = {"of", "for", "with", "to", "about", "like", "from", "at", "in", "on", "than", "by"}


@pytest.mark.parametrize("name", ["guppy", "mochi"])
def test_a_slot_before_a_verb_agrees_with_every_entry_of_its_pool(name):
    """"{fin} say hi too" with "my tail": a slot straight before a verb is its subject, so
    every entry of the pool must have the verb's number ("is"/"tastes": singular, "are"/"say":
    plural). A pool that mixes "a pellet" and "bloodworms" can only be an object."""
    persona = load_persona(PERSONAS / f"{name}.toml")
    templates = [t for topic in persona.topics for t in topic.prompts + topic.responses]
    templates += persona.tails
    slips = []
    for template in templates:
        for before, slot, verb in re.findall(r"(\w*) ?\{(\w+)\} (\w+)", template):
            verb = verb.lower()
            if before.lower() in _PREPOSITIONS:  # "the taste of {food} is": not the subject
                continue
            singular = verb in {"is", "was", "has", "does"} or (
                len(verb) > 3 and verb.endswith("s") and not verb.endswith("ss") and verb not in _NOT_VERBS)
            if singular:
                wrong = [e for e in persona.pools[slot] if _plural(e)]
            elif verb in _PLURAL_VERBS:
                wrong = [e for e in persona.pools[slot] if not _plural(e)]
            else:
                continue
            slips += [f"{template!r}: {e!r} {verb}" for e in wrong]
    assert not slips, f"{len(slips)} subject-verb slips:\n  " + "\n  ".join(slips)
