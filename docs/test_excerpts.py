"""docs/excerpts.py: a quoted excerpt passes only if its text, dedented parts in order, is in the file."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("doc_excerpts", Path(__file__).with_name("excerpts.py"))
excerpts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(excerpts)

SOURCE = """class A:
    def f(self):
        x = 1

        return x

    def g(self):
        return 2
""".splitlines()


def found(quote: str) -> bool:
    at = 0
    for part in excerpts.excerpt_parts(quote):
        at = excerpts.found_indented(part, SOURCE, at)
        if at is None:
            return False
    return True


def test_a_dedented_quote_with_a_blank_line_is_found():
    assert found("def f(self):\n    x = 1\n\n    return x\n")


def test_parts_separated_by_an_elision_line_are_found_in_order_only():
    assert found("def f(self):\n...\ndef g(self):\n")
    assert not found("def g(self):\n...\ndef f(self):\n")


def test_a_changed_line_or_a_changed_relative_indent_is_not_found():
    assert not found("def f(self):\n    x = 2\n")
    assert not found("def f(self):\nx = 1\n")


def test_a_part_must_start_at_a_line_start_not_inside_a_line():
    assert not found("f(self):\n")
