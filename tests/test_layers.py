"""The package's layers, as rules over its import graph (every import, lazy ones inside
functions included): what a reader can rely on when looking for where a change belongs.

    guppy_jax/*.py          the commands you run, and cli.py, what they share
    guppy_jax/core/         config, model, steps, schedule, sampler, tokenizer: imports no other layer
    guppy_jax/data/ training/ export/ analysis/ course/   the library: never imports a command or cli
    reference_torch/        the PyTorch reference: only core's config, schedule and tokenizer
"""
import ast
from pathlib import Path

import pytest

from guppy_jax.cli import REPO

PACKAGE = REPO / "guppy_jax"
LIBRARY = ("core", "data", "training", "export", "analysis", "course")
COMMANDS = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
REFERENCE_MAY_USE = ("guppy_jax.core.config", "guppy_jax.core.schedule", "guppy_jax.core.tokenizer")
TOUCH_THE_REFERENCE = ("export", "analysis", "course")  # besides the commands: conversion, parity-style
# comparisons, and the exercises' checks against PyTorch


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, as absolute names (relative ones resolved)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            # `from guppy_jax import chat` imports the module guppy_jax.chat
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def ours(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("guppy_jax", "reference_torch")}


def modules_in(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_the_top_level_holds_only_commands_and_the_library_only_subpackages():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and not p.name.startswith("__"))
    assert folders == sorted(LIBRARY)
    assert COMMANDS == {"prepare", "train", "chat", "eval", "convert", "bench", "compare", "inspect", "web", "cli"}


@pytest.mark.parametrize("path", modules_in("core"), ids=lambda p: p.name)
def test_core_imports_nothing_else_of_the_package(path):
    outside = {n for n in ours(imports(path)) if not n.startswith("guppy_jax.core") and n != "guppy_jax"}
    assert not outside, f"{path.relative_to(REPO)} imports {sorted(outside)}"


@pytest.mark.parametrize("path", [p for folder in LIBRARY for p in modules_in(folder)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_library_module_imports_a_command_or_the_cli(path):
    commands = {n for n in ours(imports(path)) if n.startswith("guppy_jax.") and n.split(".")[1] in COMMANDS}
    assert not commands, f"{path.relative_to(REPO)} imports {sorted(commands)}"


@pytest.mark.parametrize("path", [p for folder in ("core", "data", "training") for p in modules_in(folder)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_commands_export_analysis_and_course_touch_the_reference(path):
    reference = {n for n in imports(path) if n.split(".")[0] == "reference_torch"}
    assert not reference, f"{path.relative_to(REPO)} imports {sorted(reference)}"


@pytest.mark.parametrize("path", sorted((REPO / "reference_torch").glob("*.py")), ids=lambda p: p.name)
def test_the_reference_imports_only_config_schedule_and_tokenizer(path):
    used = {n for n in ours(imports(path)) if n.startswith("guppy_jax")}
    other = {n for n in used if not any(n == m or n.startswith(m + ".") for m in REFERENCE_MAY_USE)}
    assert not other, f"{path.relative_to(REPO)} imports {sorted(other)}"


def test_the_rules_catch_a_forbidden_import(tmp_path):
    """The checker itself: a core module that imports the training loop is caught."""
    bad = PACKAGE / "core" / "_probe_for_test.py"
    bad.write_text("from ..training import loop\n")
    try:
        found = ours(imports(bad))
    finally:
        bad.unlink()
    assert "guppy_jax.training.loop" in found
