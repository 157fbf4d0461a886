"""The sampler saved with jax.export: the same tokens as the jitted sampler, read back
without tracing, keyed by everything it depends on, and nothing written with the cache off."""
import jax
import pytest

import guppy_jax
from guppy_jax import exported
from guppy_jax.config import PRESETS
from guppy_jax.generate import generate
from guppy_jax.model import init_params

CFG = PRESETS["tiny"].model
PROMPTS = [[1, 5, 9, 14, 2, 1, 7], [1, 30, 31]]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(exported, "cache_root", lambda: tmp_path / "guppy-exported")
    return tmp_path / "guppy-exported"


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.key(3))


def answers(params, sampler, temperature):
    return generate(CFG, params, PROMPTS, jax.random.key(1), max_new_tokens=16, temperature=temperature,
                    top_k=20, top_p=0.9, sampler=sampler)


def test_the_exported_sampler_gives_the_jitted_samplers_tokens(cache, params):
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    for temperature in (0.0, 0.8):
        assert answers(params, sample, temperature) == answers(params, None, temperature), temperature


def test_a_second_start_reads_the_artifact_and_traces_nothing(cache, params, monkeypatch):
    first = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    files = list(cache.glob("sampler-*.bin"))
    assert len(files) == 1 and files[0].stat().st_size > 0

    def no_tracing(*args):
        raise AssertionError("the sampler was traced again although its artifact was there")
    monkeypatch.setattr(exported, "_export", no_tracing)
    second = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, second, 0.8) == answers(params, first, 0.8)


def test_the_artifact_name_changes_with_shapes_config_and_source(cache, monkeypatch, tmp_path):
    base = exported.artifact_path(CFG, 1, 48, 16)
    assert base == exported.artifact_path(CFG, 1, 48, 16)
    others = {exported.artifact_path(CFG, 2, 48, 16), exported.artifact_path(CFG, 1, 40, 16),
              exported.artifact_path(CFG, 1, 48, 8), exported.artifact_path(CFG.replace(n_heads=2), 1, 48, 16)}
    assert base not in others and len(others) == 4
    src = tmp_path / "src"
    src.mkdir()
    for name in exported.SOURCES:
        (src / name).write_text("changed")
    monkeypatch.setattr(guppy_jax, "__file__", str(src / "__init__.py"))  # where source_digest reads
    assert exported.artifact_path(CFG, 1, 48, 16) != base  # an edited generate.py never runs from an old file


def test_a_damaged_artifact_is_rebuilt(cache, params):
    exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    path = next(cache.glob("sampler-*.bin"))
    path.write_bytes(b"not an export")
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert path.read_bytes() != b"not an export"


def test_with_the_compile_cache_off_nothing_is_read_or_written(monkeypatch, params):
    monkeypatch.setattr(exported, "cache_root", lambda: None)
    assert exported.artifact_path(CFG, 1, 48, 16) is None
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)


def test_a_warm_chat_answers_without_importing_flax(trained, tmp_path):
    """The second chat reads its sampler's export: Flax (the model's definition) is not even imported."""
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
    assert list((tmp_path / "cache" / "guppy-exported").glob("sampler-*.bin"))


def test_a_process_running_older_code_than_the_files_uses_its_export_but_does_not_save_it(cache, params, monkeypatch):
    monkeypatch.setitem(exported.SOURCES_AT_IMPORT, "generate.py", "a digest of an older generate.py")
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert not list(cache.glob("sampler-*.bin"))


def test_an_export_its_arguments_do_not_fit_is_made_again(cache, params):
    exported.sampler(CFG, 1, CFG.max_seq_len - 16, 16)  # an export for one row...
    one_row = next(cache.glob("sampler-*.bin"))
    two_rows = exported.artifact_path(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    two_rows.write_bytes(one_row.read_bytes())  # ...filed under the name of two rows
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert two_rows.read_bytes() != one_row.read_bytes()


def test_without_flatbuffers_the_plain_sampler_runs_and_nothing_is_written(cache, params, monkeypatch):
    monkeypatch.setattr(exported, "can_serialize", lambda: False)
    sample = exported.sampler(CFG, len(PROMPTS), CFG.max_seq_len - 16, 16)
    assert answers(params, sample, 0.0) == answers(params, None, 0.0)
    assert not cache.exists()
