"""Write notebooks/walkthrough.ipynb from docs/walkthrough.md with jupytext (one source, two doors).

    python docs/make_notebook.py          # rewrite the notebook
    python docs/make_notebook.py --check  # exit 1 if the committed notebook differs

The Markdown is the source: its ```python blocks become code cells, everything else
(quoted excerpts included) markdown cells. Outputs are never committed; cell ids are
numbered so that a rebuild is byte-identical.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "docs" / "walkthrough.md"
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def build() -> nbformat.NotebookNode:
    nb = jupytext.reads(SOURCE.read_text(), fmt="md")
    nb.metadata = nbformat.NotebookNode({
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}, "colab": {"provenance": []}})
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
        cell.metadata = nbformat.NotebookNode()
    nbformat.validate(nb)
    return nb


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = nbformat.writes(build())
    if "--check" in argv:
        same = NOTEBOOK.exists() and NOTEBOOK.read_text() == text
        print("up to date" if same else f"{NOTEBOOK} differs from {SOURCE}: run python docs/make_notebook.py")
        return 0 if same else 1
    NOTEBOOK.write_text(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
