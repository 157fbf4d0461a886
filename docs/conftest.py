"""The walkthrough is a test: Sybil collects docs/*.md, runs every ```python block in order in
one namespace per document, and checks every ```py <path> block (a quoted excerpt of the
project's source) against that file (docs/excerpts.py), so a quote cannot drift from the code."""
from __future__ import annotations

import shutil

import jax
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

from excerpts import ExcerptParser  # docs/ is on sys.path while pytest imports this conftest


def remember_precision(namespace):
    namespace["_saved_matmul_precision"] = jax.config.jax_default_matmul_precision


def clean_up(namespace):
    """Remove the document's scratch directory `workdir`, and give back JAX's matmul precision
    (the walkthrough raises it on GPUs), so nothing leaks into other tests."""
    if "workdir" in namespace:
        shutil.rmtree(namespace["workdir"], ignore_errors=True)
    jax.config.update("jax_default_matmul_precision", namespace["_saved_matmul_precision"])


pytest_collect_file = Sybil(parsers=[PythonCodeBlockParser(), ExcerptParser()], patterns=["*.md"],
                            setup=remember_precision, teardown=clean_up).pytest()
