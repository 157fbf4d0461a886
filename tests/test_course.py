"""The walkthrough's exercises (guppy_jax/course): each check passes on its hidden solution and
fails on the stub the page prints, and the page asks for every exercise there is."""
import importlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from guppy_jax import course

PAGE = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.md"
CELLS = re.findall(r"\n```python\n(.*?)\n```", PAGE.read_text(), flags=re.S)
ASKS = re.compile(r'^check\("(\w+)", (\w+)\)$', flags=re.M)


def stubs() -> dict:
    """Each exercise cell's stub, by exercise name: the cell run as the reader first sees it,
    with `check` recording what it was given instead of judging it."""
    found = {}
    for cell in CELLS:
        if not ASKS.search(cell):
            continue
        given = {}
        namespace = {"jax": jax, "jnp": jnp, "np": np, "check": lambda name, fn: given.__setitem__(name, fn)}
        exec(compile(cell, str(PAGE), "exec"), namespace)  # noqa: S102: the project's own page
        found.update(given)
    return found


STUBS = stubs()
NAMES = list(course.all_checks())


def test_there_are_at_least_ten_exercises_and_the_page_asks_for_each_once():
    assert len(NAMES) >= 10
    asked = [name for cell in CELLS for name, _ in ASKS.findall(cell)]
    assert sorted(asked) == sorted(NAMES), "an exercise the page never asks for, or asks for twice"


def test_every_topic_has_its_checks_and_its_solutions():
    for topic in course.TOPICS:
        checks = importlib.import_module(f"guppy_jax.course.checks.{topic}")
        solutions = importlib.import_module(f"guppy_jax.course.solutions.{topic}")
        assert checks.CHECKS and all(callable(getattr(solutions, name, None)) for name in checks.CHECKS), topic


@pytest.mark.parametrize("name", NAMES)
def test_the_check_passes_on_the_solution(name, capsys):
    assert course.check(name, course._solution_function(name)), capsys.readouterr().out
    assert capsys.readouterr().out.startswith(f"{name}: right.")


@pytest.mark.parametrize("name", NAMES)
def test_the_check_fails_on_the_pages_stub_and_says_what_to_do(name, capsys):
    assert name in STUBS, f"no cell of the page calls check({name!r}, ...)"
    assert not course.check(name, STUBS[name])
    out = capsys.readouterr().out
    assert out.startswith(f"{name}: not yet.") and len(out.split()) > 5


def test_a_crash_in_the_readers_code_is_named_and_an_unknown_exercise_is_refused(capsys):
    def crashes(*args, **kwargs):
        raise ValueError("boom")

    assert not course.check(NAMES[0], crashes)
    assert capsys.readouterr().out == f"{NAMES[0]}: not yet. Your function raised ValueError: boom\n"
    with pytest.raises(KeyError, match="no exercise named"):
        course.check("no_such_exercise", print)


def test_solution_prints_the_reference_answer(capsys):
    course.solution(NAMES[0])
    assert f"def {NAMES[0]}(" in capsys.readouterr().out
