"""The sampler compiled once and saved, so that a later chat neither traces nor compiles it.

JAX's persistent compilation cache (cli.py turns it on) saves XLA's compiled programs, but
a new process must still trace `generate_cached` through Flax and lower it to StableHLO
before it can look its program up, a visible share of a chat's start-up. Here the first chat
compiles the sampler as it would anyway (trace, lower, compile), but outside JAX's cache, and
saves the compiled executable (`jax.experimental.serialize_executable`). A later chat loads
it back and calls it: no Flax, no tracing, no lowering, no compile. (What each step costs:
BENCHMARKS.md, "Start-up, decoders and the memory floor".)

The file lives beside the compilation cache (`<jax_compilation_cache_dir>/guppy-compiled/`),
named by a hash of everything the program depends on: the model config, the batch and
prompt shapes, the answer length, the versions of jax, jaxlib and flax, the device (for a
CPU, its instruction-set flags: the file is machine code), the random-number and matmul
settings, and the source of generate.py, model.py and config.py (a changed sampler never
runs from an old file; a process whose loaded sources are older than the files on disk,
such as a notebook after `git pull`, uses its compiled sampler but does not save it). A
file that cannot be loaded, or that its arguments do not fit, is compiled again. With the
compilation cache off, nothing is read or written: the plain jitted sampler runs.

Like the entries of JAX's own compilation cache, a saved executable is code that runs when
loaded, so it is only ever read from the user's own cache directory, never from a run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from jax.experimental import serialize_executable
from jax.experimental.compilation_cache.compilation_cache import reset_cache

from .. import SOURCES_AT_IMPORT, source_digest

__all__ = ["sampler", "artifact_path"]
SOURCES = tuple(SOURCES_AT_IMPORT)  # core/generate.py, model.py, config.py: named once, in __init__.py
SETTINGS = ("jax_enable_x64", "jax_default_prng_impl", "jax_threefry_partitionable", "jax_default_matmul_precision")


def source_digests() -> list[str]:
    return [source_digest(name) for name in SOURCES]


def cache_root() -> Path | None:
    """Where compiled samplers go: beside JAX's compilation cache, or None when it is off."""
    directory = jax.config.jax_compilation_cache_dir
    return Path(directory) / "guppy-compiled" if directory else None


def device_identity() -> dict:
    """What the machine code was made for: the device, and on a CPU its feature flags."""
    device = jax.devices()[0]
    ident = {"platform": device.platform, "kind": device.device_kind, "machine": platform.machine(),
             "version": getattr(device.client, "platform_version", "")}
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
        ident["cpu_flags"] = hashlib.sha256(flags.encode()).hexdigest()[:16]
    except (OSError, StopIteration):
        ident["cpu_flags"] = platform.processor()
    return ident


def artifact_path(cfg, batch: int, prompt_len: int, max_new_tokens: int) -> Path | None:
    root = cache_root()
    if root is None:
        return None
    versions = {name: metadata.version(name) for name in ("jax", "jaxlib", "flax")}
    settings = {name: str(getattr(jax.config, name, None)) for name in SETTINGS}
    recipe = json.dumps({"cfg": asdict(cfg), "shape": [batch, prompt_len, max_new_tokens], "versions": versions,
                         "device": device_identity(), "settings": settings, "source": source_digests()},
                        sort_keys=True)
    return root / f"sampler-{hashlib.sha256(recipe.encode()).hexdigest()[:24]}.bin"


@contextlib.contextmanager
def _persistent_cache_off():
    """JAX's persistent compilation cache neither read nor written inside the block.

    An executable that JAX read back from that cache can serialize without its compiled
    kernels (seen on XLA:CPU: loading such a file fails with "Function ... not found";
    BENCHMARKS.md, "Start-up, decoders and the memory floor", "A fix"), so the one we save
    must be compiled afresh. `reset_cache` makes JAX look at the setting again."""
    enabled = jax.config.jax_enable_compilation_cache
    reset_cache()
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        reset_cache()


def _compile(cfg, max_new_tokens: int, args):
    """Trace, lower and compile generate_cached for these arguments (the slow path, taken once)."""
    from ..core.generate import generate_cached
    lowered = generate_cached.lower(*args, cfg=cfg, max_new_tokens=max_new_tokens)
    with _persistent_cache_off():
        return lowered.compile()


def _load(path: Path, args):
    """The compiled sampler saved at `path`, or None when there is none or it cannot be loaded."""
    if not path.exists():
        return None
    try:
        return serialize_executable.deserialize_and_load(
            path.read_bytes(), jax.tree_util.tree_structure((args, {})), jax.tree_util.tree_structure((0, 0)))
    except Exception:  # damaged, or written by another jax: compile it again
        return None


def _save(compiled, path: Path) -> None:
    if [SOURCES_AT_IMPORT.get(name) for name in SOURCES] != source_digests():
        return  # this process runs older code than the files now say: do not file it under their name
    try:
        blob = serialize_executable.serialize(compiled)[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = path.with_suffix(f".{os.getpid()}.tmp")
        unfinished.write_bytes(blob)
        unfinished.replace(path)  # readers see a whole file or none
    except Exception:  # noqa: BLE001 (saving is a courtesy to the next start, never a reason to fail this one)
        pass  # a read-only or full cache, a backend or program that cannot be serialized: the next start compiles


def sampler(cfg, batch: int, prompt_len: int, max_new_tokens: int) -> Callable | None:
    """generate_cached for these shapes, as
    `(params, tokens_BT, positions_BT, segment_ids_BT, rng, temperature, top_k, top_p) -> (out_BN, counts_B)`:
    loaded from its saved executable when there is one, else compiled and saved. With the
    compilation cache off, None: `generate`'s own plain jitted sampler."""
    path = artifact_path(cfg, batch, prompt_len, max_new_tokens)
    if path is None:  # no cache: saving would only add work to this start
        return None
    current = {"compiled": None, "fresh": False}

    def call(params, tokens_BT, positions_BT, segment_ids_BT, rng, temperature, top_k, top_p):
        args = (params, tokens_BT, positions_BT, segment_ids_BT, rng,
                np.float32(temperature), np.int32(top_k), np.float32(top_p))
        if current["compiled"] is None:
            current["compiled"] = _load(path, args)
        if current["compiled"] is not None:
            try:  # waited for here, so that a file that fails while running is caught too
                return jax.block_until_ready(current["compiled"](*args))
            except Exception:
                if current["fresh"]:
                    raise
                # a file its arguments do not fit (shapes or dtypes it was not made for), or that
                # cannot run: compile again
        current.update(compiled=_compile(cfg, max_new_tokens, args), fresh=True)
        _save(current["compiled"], path)
        return current["compiled"](*args)
    return call
