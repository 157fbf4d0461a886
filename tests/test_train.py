"""The train command: flags, presets, --help, and Ctrl-C in a real process."""
import os
import signal
import subprocess
import sys
import time

from guppy_jax.cli import REPO
from guppy_jax.config import PRESETS
from guppy_jax.train import build_parser, resolve_config


def test_cli_flags_override_the_preset():
    args = build_parser().parse_args(["--preset", "tiny", "--steps", "7", "--lr", "0.01", "--no-packing",
                                      "--batch-size", "4", "--d-model", "64"])
    preset, cfg, note = resolve_config(args, "cpu")
    assert preset == "tiny" and note == ""
    assert (cfg.optim.steps, cfg.optim.lr, cfg.packing, cfg.batch_size, cfg.model.d_model) == (7, 0.01, False, 4, 64)
    _, auto, note = resolve_config(build_parser().parse_args([]), "cpu")
    assert auto == PRESETS["cpu"] and "--preset guppy-9m" in note
    assert resolve_config(build_parser().parse_args([]), "gpu")[0] == "guppy-9m"


def test_help_documents_every_flag():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--steps", "100000", "--eval-every",
           "100000", "--checkpoint-every", "100000", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 200):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted: saved step" in output
    saved = [int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert len(saved) == 1 and saved[0] > 0
