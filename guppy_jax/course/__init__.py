"""The walkthrough's exercises: a check for each, and a solution kept out of the page.

An exercise in docs/walkthrough.md is a stub the reader fills in, followed by

    check("masked_cross_entropy", masked_cross_entropy)

which runs the reader's function on inputs of its own, compares it with a reference (our
model's code, PyTorch, or a plain loop), and prints "right" or "not yet" with the reason. It
never raises, so a notebook with an unsolved exercise still runs to the end. `solution(name)`
prints the answer for someone who is stuck.

Each topic is a pair of modules with the same name: `checks/<topic>.py` holds `CHECKS`, a dict
from exercise name to a function that takes the reader's function and raises `Wrong` (or
AssertionError) with a sentence when it is not right; `solutions/<topic>.py` holds one
function per exercise, under the exercise's name. tests/test_course.py proves that every
check passes on its solution and fails on the stub the walkthrough prints.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

# One topic per walkthrough chapter that has exercises, in the page's order.
TOPICS = ("tracing", "randomness", "losses", "vmap", "optimizer", "pytrees", "nnx", "steps", "debugging",
          "sampling", "packing", "sharding")


class Wrong(AssertionError):
    """A check's verdict: the reader's function runs, but its answer is not right (the message
    says how)."""


def _topic_modules(kind: str):
    for topic in TOPICS:
        try:
            yield importlib.import_module(f"{__name__}.{kind}.{topic}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{kind}.{topic}":
                raise


def all_checks() -> dict[str, Callable]:
    """Every exercise's check, by name, in the page's order."""
    found: dict[str, Callable] = {}
    for module in _topic_modules("checks"):
        found.update(module.CHECKS)
    return found


def _solution_function(name: str) -> Callable:
    for module in _topic_modules("solutions"):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(f"no solution named {name!r}")


def check(name: str, function: Callable) -> bool:
    """Run exercise `name`'s check on `function`; print the verdict; True when right."""
    known = all_checks()
    if name not in known:
        raise KeyError(f"no exercise named {name!r}: one of {', '.join(known)}")
    try:
        detail = known[name](function)
    except NotImplementedError:
        print(f"{name}: not yet. The stub still raises NotImplementedError: write your code in its place.")
        return False
    except AssertionError as err:
        print(f"{name}: not yet. {err}")
        return False
    except Exception as err:  # the reader's code failed: say how, and go on
        print(f"{name}: not yet. Your function raised {type(err).__name__}: {err}")
        return False
    print(f"{name}: right." + (f" {detail[:1].upper()}{detail[1:]}" if detail else ""))
    return True


def solution(name: str) -> None:
    """Print the reference answer to exercise `name`."""
    print(inspect.getsource(_solution_function(name)))
