"""The sampler saved as a `jax.export` artifact, so that a second chat skips tracing it.

JAX's persistent compilation cache (cli.py turns it on) saves XLA's compiled program, but
every new process still traces `generate_cached` through Flax and lowers it to StableHLO
before it can look the program up: about a third of a second of a chat's start-up on 2
cores. `jax.export` serializes the lowered program itself. A later process reads it back,
and XLA's compile of it is answered by the compilation cache, so neither Flax nor tracing
is needed before the first token.

The file lives beside the compilation cache (`<jax_compilation_cache_dir>/guppy-exported/`),
named by a hash of everything the program depends on: the model config, the batch and
prompt shapes, the answer length, the versions of jax, jaxlib and flax, the backend, the
random-number and matmul settings, and the source of generate.py, model.py and config.py (a
changed sampler never runs from an old file; a process whose loaded sources are older than
the files on disk, such as a notebook after `git pull`, uses its export but does not save it).
An export that its arguments do not fit is rebuilt. With the
compilation cache off, nothing is read or written (the plain jitted sampler runs), and a
file that cannot be read is rebuilt. The price is paid once: the first chat on a new run
exports the sampler, then lowers a wrapper around the export and compiles it, 0.7-0.8 s
more than tracing and compiling the sampler alone in BENCHMARKS.md's run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax import export  # a submodule that older jax versions do not import with `jax`

from . import SOURCES_AT_IMPORT, source_digest

__all__ = ["sampler", "artifact_path"]
SOURCES = tuple(SOURCES_AT_IMPORT)  # generate.py, model.py, config.py: named once, in __init__.py
SETTINGS = ("jax_enable_x64", "jax_default_prng_impl", "jax_threefry_partitionable", "jax_default_matmul_precision")


def source_digests() -> list[str]:
    return [source_digest(name) for name in SOURCES]


def cache_root() -> Path | None:
    """Where artifacts go: beside JAX's compilation cache, or None when it is off."""
    directory = jax.config.jax_compilation_cache_dir
    return Path(directory) / "guppy-exported" if directory else None


def artifact_path(cfg, batch: int, prompt_len: int, max_new_tokens: int) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    versions = {name: metadata.version(name) for name in ("jax", "jaxlib", "flax")}
    settings = {name: str(getattr(jax.config, name, None)) for name in SETTINGS}
    recipe = json.dumps({"cfg": asdict(cfg), "shape": [batch, prompt_len, max_new_tokens], "versions": versions,
                         "backend": jax.default_backend(), "settings": settings, "source": source_digests()},
                        sort_keys=True)
    return root / f"sampler-{hashlib.sha256(recipe.encode()).hexdigest()[:24]}.bin"


def _export(cfg, batch: int, prompt_len: int, max_new_tokens: int):
    """Trace and lower generate_cached for these shapes (the slow path, taken once)."""
    from .convert_weights import abstract_params
    from .generate import generate_cached

    def run(params, tokens_BT, positions_BT, segment_ids_BT, key_data, temperature, top_k, top_p):
        return generate_cached(params, tokens_BT, positions_BT, segment_ids_BT, jax.random.wrap_key_data(key_data),
                               temperature, top_k, top_p, cfg=cfg, max_new_tokens=max_new_tokens)

    rows = jax.ShapeDtypeStruct((batch, prompt_len), np.int32)
    key = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    scalar = lambda dtype: jax.ShapeDtypeStruct((), dtype)  # noqa: E731
    return export.export(jax.jit(run))(abstract_params(cfg), rows, rows, rows, key, scalar(np.float32),
                                           scalar(np.int32), scalar(np.float32))


def can_serialize() -> bool:
    """jax.export writes its files with flatbuffers, which jax itself does not require."""
    return importlib.util.find_spec("flatbuffers") is not None


def _load(path: Path | None):
    if path is None or not path.exists():
        return None
    try:
        return export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # damaged, or written by another jax: rebuild it
        return None


def _save(exported, path: Path) -> None:
    if [SOURCES_AT_IMPORT.get(name) for name in SOURCES] != source_digests():
        return  # this process runs older code than the files now say: do not file it under their name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(exported.serialize())
        partial.replace(path)  # readers see a whole file or none
    except OSError:
        pass  # a read-only or full cache only costs the next start its tracing


def sampler(cfg, batch: int, prompt_len: int, max_new_tokens: int) -> Callable:
    """generate_cached for these shapes, as
    `(params, tokens_BT, positions_BT, segment_ids_BT, rng, temperature, top_k, top_p) -> (out_BN, counts_B)`:
    read from its artifact when there is one, else exported and saved; with the compilation
    cache off, the plain jitted sampler."""
    path = artifact_path(cfg, batch, prompt_len, max_new_tokens)
    if path is None or not can_serialize():  # no cache: exporting would only add work to this start
        from functools import partial

        from .generate import generate_cached
        return partial(generate_cached, cfg=cfg, max_new_tokens=max_new_tokens)
    loaded = _load(path)
    current = {"exported": loaded or _export(cfg, batch, prompt_len, max_new_tokens), "fresh": loaded is None}
    if loaded is None:
        _save(current["exported"], path)

    def call(params, tokens_BT, positions_BT, segment_ids_BT, rng, temperature, top_k, top_p):
        args = (params, tokens_BT, positions_BT, segment_ids_BT, jax.random.key_data(rng),
                np.float32(temperature), np.int32(top_k), np.float32(top_p))
        try:
            return current["exported"].call(*args)
        except Exception:
            if current["fresh"]:
                raise
            # a file its arguments do not fit (shapes or dtypes it was not made for): make it again
            current.update(exported=_export(cfg, batch, prompt_len, max_new_tokens), fresh=True)
            _save(current["exported"], path)
            return current["exported"].call(*args)
    return call
