"""The eval command on a tiny trained run."""
import json
import os
import subprocess
import sys

import numpy as np

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
