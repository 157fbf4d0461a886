"""The eval command on a tiny trained run."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from guppy_jax import eval as guppy_eval
from guppy_jax.cli import REPO


def test_eval_prints_its_table(trained, capsys, tmp_path):
    out, data = trained.run_dir, trained.data_dir
    assert guppy_eval.main(["--checkpoint", str(out), "--data-dir", str(data), "--json",
                            str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    for label in ("keyword hit rate", "lowercase answers", "short answers", "eval loss"):
        assert label in text
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["cases"] >= 30 and 0 <= result["keyword_hit_rate"] <= 1
    assert np.isclose(result["perplexity"], np.exp(result["eval_loss"]))


def test_quiet_prints_only_the_scores(trained, capsys):
    assert guppy_eval.main(["--run-dir", str(trained.run_dir), "--data-dir", str(trained.data_dir),
                            "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["keyword", "by", "lowercase", "short", "eval"]


def test_bad_temperature_is_a_usage_error(trained, capsys):
    assert guppy_eval.main(["--run-dir", str(trained.run_dir), "--temperature", "nan"]) == 2
    assert "--temperature" in capsys.readouterr().err


def test_the_eval_command_writes_nothing_to_stderr(trained, tmp_path):
    """No library warning (orbax's read-only notice through absl, JAX's fork warning) reaches the user."""
    env = {**{k: v for k, v in os.environ.items() if k != "GUPPY_DEBUG"}, "GUPPY_COMPILE_CACHE": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, "-m", "guppy_jax.eval", "--run-dir", str(trained.run_dir), "--data-dir",
                           str(trained.data_dir), "--variants", "lowercase", "--quiet"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "keyword hit rate" in done.stdout
    assert done.stderr == ""


@pytest.fixture
def no_eval_runs(monkeypatch):
    """Usage errors are found before any work: starting the eval fails the test."""
    def run_eval(*args, **kwargs):
        raise AssertionError("the eval ran before its flags were checked")
    monkeypatch.setattr(guppy_eval, "run_eval", run_eval)


@pytest.mark.parametrize("where, says", [("a directory", "is a directory: give a file name"),
                                         ("in a missing folder", "does not exist")])
def test_a_json_path_that_cannot_be_written_is_a_usage_error_before_any_work(trained, tmp_path, capsys, no_eval_runs,
                                                                             where, says):
    target = tmp_path if where == "a directory" else tmp_path / "no-such-folder" / "r.json"
    assert guppy_eval.main(["--run-dir", str(trained.run_dir), "--json", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"--json {target}" in err and says in err and len(err.strip().splitlines()) == 1


def test_an_out_of_range_seed_is_a_usage_error_before_any_work(trained, capsys, no_eval_runs):
    assert guppy_eval.main(["--run-dir", str(trained.run_dir), "--seed", str(2**64)]) == 2
    assert "--seed must be in" in capsys.readouterr().err


def test_a_missing_cases_file_fails_before_the_weights_load(trained, tmp_path, capsys, monkeypatch):
    import guppy_jax.training.checkpoints

    def load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the cases were read")
    monkeypatch.setattr(guppy_jax.training.checkpoints, "load_for_inference", load)
    missing = tmp_path / "cases.toml"
    assert guppy_eval.main(["--run-dir", str(trained.run_dir), "--cases", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "cannot read the eval cases" in err
