"""guppy-jax: GuppyLM, a tiny fish-talking transformer, in JAX/Flax beside a PyTorch reference."""

__version__ = "0.1.0"

# The sources the sampler is built from, as this process first saw them: guppy_jax/compiled_sampler.py
# saves a compiled sampler only while the files on disk still match (see its docstring).
import hashlib as _hashlib  # noqa: E402
from pathlib import Path as _Path  # noqa: E402


def source_digest(name: str) -> str:
    """The sha256 of guppy_jax/<name> as the file is on disk now."""
    return _hashlib.sha256((_Path(__file__).parent / name).read_bytes()).hexdigest()


SOURCES_AT_IMPORT = {name: source_digest(name) for name in ("core/generate.py", "core/model.py", "core/config.py")}
