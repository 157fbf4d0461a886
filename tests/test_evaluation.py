"""The personality eval's pieces: held-out prompts and how an answer is scored."""
from guppy_jax.cli import DEFAULT_CASES, DEFAULT_PERSONA
from guppy_jax.evaluation import Case, load_cases, score_answer
from guppy_jax.persona import generate, load_persona


def test_eval_prompts_are_held_out():
    cases, _ = load_cases(DEFAULT_CASES)
    assert len(cases) >= 30 and len({c.topic for c in cases}) >= 30
    seen = {r["input"] for r in generate(load_persona(DEFAULT_PERSONA), 60_000, seed=42)}
    assert not [c.prompt for c in cases if c.prompt in seen]


def test_keywords_match_at_word_starts():
    case = Case("greetings", "hey", ("hi", "bubble"))
    assert score_answer("hi there", case, 30)["hit"]
    assert score_answer("i chase bubbles.", case, 30)["hit"]
    assert not score_answer("this is a thing", case, 30)["hit"]
    assert not score_answer("Hello There", case, 30)["lowercase"]
    assert not score_answer("word " * 31, case, 30)["short"]
