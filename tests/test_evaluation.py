"""The personality eval's pieces: held-out prompts and how an answer is scored."""
from guppy_jax.cli import DEFAULT_CASES, DEFAULT_PERSONA
from guppy_jax.analysis.personality import Case, load_cases, score_answer, summarize_rows
from guppy_jax.data.persona import conversations, load_persona
from guppy_jax.data.writing import bare


def words(text: str) -> set:
    return set(bare(text).split())


def test_eval_prompts_are_held_out_in_any_writing():
    cases, _ = load_cases(DEFAULT_CASES)
    assert len(cases) >= 30 and len({c.topic for c in cases}) >= 30
    persona = load_persona(DEFAULT_PERSONA)
    seen = {bare(r["input"]) for r in conversations(persona, 60_000, seed=42)}  # capitals and end marks undone
    assert not [c.prompt for c in cases if bare(c.prompt) in seen]
    # nor a near copy: no prompt template shares 70% of its words with an eval prompt
    for topic in persona.topics:
        for template in topic.prompts:
            for case in cases:
                a, b = words(template), words(case.prompt)
                assert len(a & b) / len(a | b) < 0.7, (template, case.prompt)


def test_keywords_match_at_word_starts():
    case = Case("greetings", "hey", ("hi", "bubble"))
    assert score_answer("hi there", case, 30)["hit"]
    assert score_answer("i chase bubbles.", case, 30)["hit"]
    assert not score_answer("this is a thing", case, 30)["hit"]
    assert not score_answer("Hello There", case, 30)["lowercase"]
    assert not score_answer("word " * 31, case, 30)["short"]


def test_rates_per_writing_variant():
    rows = [{"variant": v, "hit": hit, "lowercase": low, "short": True}
            for v, hit, low in (("lowercase", True, True), ("lowercase", False, True),
                                ("CAPS!", False, False), ("CAPS!", False, True))]
    result = summarize_rows(rows, ("lowercase", "CAPS!"), 30)
    assert result["cases"] == 2 and result["answers"] == 4
    assert result["keyword_hit_rate"] == 0.5 == result["variants"]["lowercase"]["keyword_hit_rate"]
    assert result["variants"]["CAPS!"] == {"keyword_hit_rate": 0.0, "lowercase_share": 0.5, "short_share": 1.0}
    assert result["lowercase_share"] == 0.75
