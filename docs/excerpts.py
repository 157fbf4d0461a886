"""Quoted source in the docs: a ```py some/file.py fenced block must appear in that file.

The quote may be dedented (a method shown without its class) and may leave source out
between parts with a line holding only `...`; the parts must then appear in that order.
`ExcerptParser` is the Sybil parser that checks it (docs/conftest.py registers it).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from sybil.parsers.markdown.lexers import FencedCodeBlockLexer

REPO = Path(__file__).resolve().parent.parent
ELISION = "..."  # a line of its own inside an excerpt: source left out between two parts


def found_indented(part: list[str], lines: list[str], start: int) -> int | None:
    """The index after the first place at or after `start` where `part` occurs in `lines`,
    every line carrying the same extra indent (excerpts are shown dedented); else None."""
    for i in range(start, len(lines) - len(part) + 1):
        first = lines[i]
        if not first.endswith(part[0]) or first[:len(first) - len(part[0])].strip():
            continue
        indent = first[:len(first) - len(part[0])]
        if all(lines[i + j] == (indent + want if want else "").rstrip() or (not want and not lines[i + j].strip())
               for j, want in enumerate(part)):
            return i + len(part)
    return None


def excerpt_parts(source: str) -> list[list[str]]:
    """The excerpt's text split at `...` lines, each part dedented, blank edges dropped."""
    parts, current = [], []
    for line in source.splitlines() + [ELISION]:
        if line.strip() == ELISION:
            text = textwrap.dedent("\n".join(current)).strip("\n")
            if text:
                parts.append([ln.rstrip() for ln in text.splitlines()])
            current = []
        else:
            current.append(line)
    return parts


class ExcerptParser:
    """```py some/file.py fenced blocks: each part must appear, in order, in that file."""

    def __init__(self):
        self.lexer = FencedCodeBlockLexer(language=r"py[ \t]+\S+", mapping={"language": "info", "source": "source"})

    def __call__(self, document):
        for region in self.lexer(document):
            path = region.lexemes["info"].split()[1]
            region.parsed = (path, str(region.lexemes["source"]))
            region.evaluator = self.evaluate
            yield region

    @staticmethod
    def evaluate(example) -> str | None:
        path, source = example.parsed
        file = REPO / path
        if not file.is_file():
            return f"excerpt names {path}, which is not a file of the project"
        lines = [ln.rstrip() for ln in file.read_text().splitlines()]
        at = 0
        for part in excerpt_parts(source):
            after = found_indented(part, lines, at)
            if after is None:
                return f"this excerpt is not (or no longer) in {path}:\n" + "\n".join(part)
            at = after
        return None
