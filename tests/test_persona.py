"""The persona files and the generator."""
import json
import re
import tomllib
from pathlib import Path

import pytest

from guppy_jax.persona import SLOT, PersonaError, generate, load_persona, parse_persona, split, summarize

PERSONAS = Path(__file__).resolve().parent.parent / "data" / "personas"
GUPPY = load_persona(PERSONAS / "guppy.toml")
RAW_GUPPY = tomllib.loads((PERSONAS / "guppy.toml").read_text(encoding="utf-8"))


def test_guppy_has_sixty_topics_with_prompts_and_responses():
    assert len(GUPPY.topics) == 60
    assert all(len(t.prompts) >= 3 and len(t.responses) >= 2 for t in GUPPY.topics)


def test_generation_is_deterministic_and_seed_dependent():
    assert generate(GUPPY, 500, seed=3) == generate(GUPPY, 500, seed=3)
    assert generate(GUPPY, 500, seed=3) != generate(GUPPY, 500, seed=4)


def test_topics_are_balanced():
    counts = summarize(generate(GUPPY, 6000, seed=0))["per_topic"]
    assert len(counts) == 60 and set(counts.values()) == {100}
    uneven = summarize(generate(GUPPY, 6007, seed=0))["per_topic"]
    assert max(uneven.values()) - min(uneven.values()) == 1


def test_unique_share_at_least_the_originals_quarter():
    assert summarize(generate(GUPPY, 20_000, seed=0))["unique_share"] >= 0.25


def test_every_template_renders_without_leftover_slots():
    records = generate(GUPPY, 30_000, seed=1)
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
    for r in generate(as_written, 3000, seed=2):
        if r["category"] == "human things" and r["output"].startswith("i do not know "):
            thing = r["output"][len("i do not know "):].split(".")[0]
            assert thing in r["input"], r


def test_guppy_character():
    records = generate(GUPPY, 6000, seed=0)
    life = [r["output"] for r in records if r["category"] == "meaning of life"]
    assert life and all("food" in o for o in life)
    assert all(r["output"] == r["output"].lower() for r in records)


def test_split_holds_out_five_percent():
    train, held = split(generate(GUPPY, 1000, seed=0))
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
    from guppy_jax.writing import bare
    records = generate(GUPPY, 6000, seed=5)
    varied = [r["input"] for r in records if r["input"] != r["input"].lower() or r["input"][-1:] in "?!.):"]
    assert 0.35 < len(varied) / len(records) < 0.6, len(varied)  # user_variation = 0.5, some vary to lowercase
    assert any(i.isupper() for i in varied) and any(i[:1].isupper() and not i.isupper() for i in varied)
    assert any("Guppy" in i for i in varied)
    assert all(r["output"] == r["output"].lower() for r in records)
    plain = generate(parse_persona({**RAW_GUPPY, "user_variation": 0}), 600, seed=5)
    assert all(r["input"] == bare(r["input"]) for r in plain)  # nothing varied at 0


def test_user_typos_give_that_share_of_prompts_one_small_slip():
    one_prompt = {**BASE, "topics": [{"name": "ask", "prompts": ["do you like bubbles"], "responses": ["yes"]}]}
    for share in (0.0, 0.3, 1.0):
        inputs = [r["input"] for r in generate(parse_persona({**one_prompt, "user_typos": share}), 2000, seed=1)]
        slipped = [i for i in inputs if i != "do you like bubbles"]
        assert abs(len(slipped) / len(inputs) - share) < 0.04, (share, len(slipped))
        for i in slipped:  # one letter swapped, dropped or doubled in one word of 4+ letters
            assert abs(len(i) - len("do you like bubbles")) <= 1 and set(i) <= set("do you like bubbles"), i


@pytest.mark.parametrize("value", [-0.1, 1.5, "half", True])
def test_user_variation_must_be_a_probability(value):
    with pytest.raises(PersonaError, match="user_variation must be a number in"):
        parse_persona({**RAW_GUPPY, "user_variation": value}, "p.toml")
