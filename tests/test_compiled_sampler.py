"""The sampler saved compiled: the same tokens as the jitted sampler, loaded back without
tracing or compiling, keyed by everything it depends on, and nothing written with the cache off."""
import jax
import pytest

import guppy_jax
from guppy_jax.export import compiled_sampler as saved
from guppy_jax.core.config import PRESETS
from guppy_jax.core.generate import generate

from .helpers import random_params

CFG = PRESETS["tiny"].model
PROMPTS = [[1, 5, 9, 14, 2, 1, 7], [1, 30, 31]]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(saved, "cache_root", lambda: tmp_path / "guppy-compiled")
    return tmp_path / "guppy-compiled"


@pytest.fixture(scope="module")
def params():
    return random_params(CFG, seed=3)


def answers(params, sampler, temperature):
    return generate(CFG, params, PROMPTS, jax.random.key(1), max_new_tokens=16, temperature=temperature,
                    top_k=20, top_p=0.9, sampler=sampler)


def test_the_saved_sampler_gives_the_jitted_samplers_tokens(cache, params):
    sample = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    for temperature in (0.0, 0.8):
        assert answers(params, sample, temperature) == answers(params, None, temperature), temperature


def test_a_second_start_loads_the_compiled_sampler_and_traces_nothing(cache, params, monkeypatch):
    first = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert not cache.exists()  # nothing is compiled, so nothing saved, before the first call
    first_answers = answers(params, first, 0.8)
    files = list(cache.glob("sampler-*.bin"))
    assert len(files) == 1 and files[0].stat().st_size > 0

    def no_tracing(*args):
        raise AssertionError("the sampler was compiled again although its executable was there")
    monkeypatch.setattr(saved, "_compile", no_tracing)
    second = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, second, 0.8) == first_answers


def test_the_file_name_changes_with_shapes_config_device_and_source(cache, monkeypatch, tmp_path):
    base = saved.artifact_path(CFG, 1, 48, 16)
    assert base == saved.artifact_path(CFG, 1, 48, 16)
    others = {saved.artifact_path(CFG, 2, 48, 16), saved.artifact_path(CFG, 1, 40, 16),
              saved.artifact_path(CFG, 1, 48, 8), saved.artifact_path(CFG.replace(n_heads=2), 1, 48, 16)}
    assert base not in others and len(others) == 4
    real = saved.device_identity()
    monkeypatch.setattr(saved, "device_identity", lambda: {**real, "cpu_flags": "another instruction set"})
    assert saved.artifact_path(CFG, 1, 48, 16) != base  # machine code is never loaded on another kind of CPU
    monkeypatch.setattr(saved, "device_identity", lambda: real)
    src = tmp_path / "src"
    src.mkdir()
    for name in saved.SOURCES:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("changed")
    monkeypatch.setattr(guppy_jax, "__file__", str(src / "__init__.py"))  # where source_digest reads
    assert saved.artifact_path(CFG, 1, 48, 16) != base  # an edited generate.py never runs from an old file


def test_a_damaged_file_is_compiled_again(cache, params):
    answers(params, saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16), 0.0)
    path = next(cache.glob("sampler-*.bin"))
    path.write_bytes(b"not an executable")
    sample = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert path.read_bytes() != b"not an executable"


def test_with_the_compile_cache_off_nothing_is_read_or_written(monkeypatch, params):
    monkeypatch.setattr(saved, "cache_root", lambda: None)
    assert saved.artifact_path(CFG, 1, 48, 16) is None
    sample = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)


def test_a_warm_chat_answers_without_importing_flax(trained, tmp_path):
    """The second chat loads its compiled sampler: Flax (the model's definition) is not even imported."""
    import os
    import subprocess
    import sys

    from guppy_jax.cli import REPO
    probe = ("import sys; from guppy_jax.chat import Chatter; c = Chatter(sys.argv[1], temperature=0); "
             "print(c.answer('hi guppy')[0]); print('flax imported:', 'flax' in sys.modules)")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", probe, str(trained.run_dir)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-1500:]
    assert runs[0].stdout.splitlines()[-1] == "flax imported: True"  # the first chat traced the sampler
    assert runs[1].stdout.splitlines() == [runs[0].stdout.splitlines()[0], "flax imported: False"]
    assert list((tmp_path / "cache" / "guppy-compiled").glob("sampler-*.bin"))


def test_a_process_running_older_code_than_the_files_uses_its_sampler_but_does_not_save_it(cache, params, monkeypatch):
    monkeypatch.setitem(saved.SOURCES_AT_IMPORT, "core/generate.py", "a digest of an older generate.py")
    sample = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert not list(cache.glob("sampler-*.bin"))


def test_a_compiled_sampler_its_arguments_do_not_fit_is_made_again(cache, params):
    one = saved.sampler(CFG, 1, CFG.max_seq_len - 16, 16)  # compiled for one row...
    generate(CFG, params, PROMPTS[:1], max_new_tokens=16, temperature=0.0, sampler=one)
    one_row = next(cache.glob("sampler-*.bin"))
    two_rows = saved.artifact_path(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    two_rows.write_bytes(one_row.read_bytes())  # ...filed under the name of two rows
    sample = saved.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert two_rows.read_bytes() != one_row.read_bytes()


PROBE = """
import sys, jax
from guppy_jax.export import compiled_sampler as saved
from guppy_jax.core.config import PRESETS
from guppy_jax.core.generate import generate
from guppy_jax.core.model import init_params
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
cfg = PRESETS["tiny"].model
sampler = saved.sampler(cfg, 2, cfg.max_seq_len - 16, 16)
if sys.argv[2] == "fill":  # compiled and kept in JAX's cache, but the file is not written (or was deleted)
    saved._save = lambda *args: None
if sys.argv[2] == "load":
    saved._compile = lambda *args: sys.exit("the saved sampler could not run and was compiled again")
print(generate(cfg, init_params(cfg, jax.random.key(3)), [[1, 5, 9, 14, 2, 1, 7], [1, 30, 31]], jax.random.key(1),
               max_new_tokens=16, temperature=0.0, sampler=sampler))
"""


def test_a_sampler_already_in_jaxs_persistent_cache_is_saved_whole(tmp_path):
    """An executable that JAX read back from its own cache serialized without its kernels, and
    the next start failed with "Function ... not found"; the saved sampler is compiled afresh.
    Three processes: the first fills JAX's cache only, the next saves the file, the last loads it."""
    import subprocess
    import sys

    from guppy_jax.cli import REPO
    runs = [subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "cache"), step], cwd=REPO,
                           capture_output=True, text=True, timeout=300) for step in ("fill", "save", "load")]
    for step, run in zip(("fill", "save", "load"), runs):
        assert run.returncode == 0, f"{step}: {run.stderr[-1500:]}"
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout
    assert list((tmp_path / "cache" / "guppy-compiled").glob("sampler-*.bin"))
