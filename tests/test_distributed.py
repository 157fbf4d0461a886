"""Many processes: settings from flags or the environment, and `train` run as two processes
on localhost (jax.distributed with gloo CPU collectives) against one process."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from guppy_jax.training.checkpoints import load_for_inference
from guppy_jax.cli import EXIT_INTERRUPTED, EXIT_USAGE, REPO
from guppy_jax.training.distributed import DistributedError, Settings, settings

from .helpers import metrics, run_weights


def test_no_settings_means_one_process_and_flags_win_over_the_environment():
    assert settings(environ={}) is None
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert settings(environ=env) == Settings("10.0.0.1:1234", 4, 3)
    assert settings("localhost:99", 2, 1, environ=env) == Settings("localhost:99", 2, 1)
    assert settings(auto=True, environ={}) == Settings(None, None, None)  # --distributed: JAX detects the rest


@pytest.mark.parametrize("given, message", [
    ({"coordinator": "localhost:1"}, "missing: --num-processes .*--process-id"),
    ({"coordinator": "localhost:1", "num_processes": 2, "process_id": 2}, "--process-id must be 0 .. 1"),
    ({"coordinator": "localhost", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
    ({"coordinator": "localhost:1", "num_processes": 0, "process_id": 0}, "at least 1"),
])
def test_half_given_or_impossible_settings_are_refused_with_what_to_change(given, message):
    with pytest.raises(DistributedError, match=message):
        settings(**given, environ={})


def test_a_number_that_is_not_one_is_named_with_its_source():
    with pytest.raises(DistributedError, match="JAX_NUM_PROCESSES must be a whole number"):
        settings(environ={"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"})


def test_train_refuses_half_given_settings_before_starting_anything(tmp_path):
    done = subprocess.run([sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir",
                           str(tmp_path / "r"), "--coordinator", "localhost:1"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_USAGE and "missing: --num-processes" in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- two processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def env_with(devices: int) -> dict:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            "GUPPY_COMPILE_CACHE": "off"}


def train_processes(n: int, run_dir, data_dir, *flags: str, devices: int = 1) -> list[str]:
    """`python -m guppy_jax.train --preset tiny` as n processes of one device each (n = 1:
    one process of `devices` devices, no jax.distributed); returns each process's stdout."""
    base = [sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir", str(run_dir),
            "--data-dir", str(data_dir), *flags]
    if n == 1:
        done = subprocess.run(base, cwd=REPO, env=env_with(devices), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return [done.stdout]
    port = free_port()
    procs = [subprocess.Popen(base + ["--coordinator", f"localhost:{port}", "--num-processes", str(n),
                                      "--process-id", str(i)], cwd=REPO, env=env_with(1), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
    outs = []
    for i, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"process {i}: {err[-2000:]}"
        outs.append(out)
    return outs


def losses(run_dir) -> dict:
    """{(step, "loss" or "eval_loss"): value}: every logged loss of a run."""
    return {(step, key): value for key in ("loss", "eval_loss") for step, value in metrics(run_dir, key).items()}


params = run_weights


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, data_dir):
    """A whole tiny run (30 steps) trained by two processes of one device each: (run dir, stdouts)."""
    run_dir = tmp_path_factory.mktemp("two")
    return run_dir, train_processes(2, run_dir, data_dir)


def test_two_processes_on_localhost_train_as_one_process_on_two_devices(two_process_run, tmp_path, data_dir):
    """Measured: the same losses and weights to the last bit."""
    two, one = two_process_run[0], tmp_path / "one"
    train_processes(1, one, data_dir, "--quiet", devices=2)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["compiles"]["train_step"] == 1
    a, b = losses(two), losses(one)
    assert a.keys() == b.keys() and len(a) == 33  # each step logged once: only process 0 writes
    worst = max(abs(a[k] - b[k]) for k in a)
    assert worst <= 1e-6, f"losses {worst:.2e} apart"
    diff = max(float(np.max(np.abs(x - y))) for x, y in zip(params(two), params(one)))
    assert diff <= 1e-6, f"params {diff:.2e} apart"


def test_process_0_speaks_for_both_and_the_start_line_says_two_processes(two_process_run):
    outs = two_process_run[1]
    assert "on 2 cpu devices in 2 processes, mesh data=2 x fsdp=1" in outs[0]
    assert "what the model says now" in outs[0]
    assert "run " not in outs[1] and "what the model says now" not in outs[1], outs[1]


def test_a_two_process_checkpoint_resumes_on_two_processes_and_on_one(two_process_run, tmp_path, data_dir):
    half = tmp_path / "half"
    train_processes(2, half, data_dir, "--quiet", "--stop-after", "10")
    again, alone = tmp_path / "again", tmp_path / "alone"
    shutil.copytree(half, again)
    shutil.copytree(half, alone)
    train_processes(2, again, data_dir, "--quiet", "--resume")
    train_processes(1, alone, data_dir, "--quiet", "--resume")
    want = params(two_process_run[0])
    for run_dir, limit in ((again, 0.0), (alone, 5e-6)):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["step"] == 30, run_dir.name
        diff = max(float(np.max(np.abs(x - y))) for x, y in zip(params(run_dir), want))
        assert diff <= limit, f"{run_dir.name}: params {diff:.2e} from the uninterrupted two-process run"


def test_a_failure_in_process_0_stops_every_process_with_an_error(tmp_path):
    """A missing data directory fails in process 0 first: the other process must not wait
    for it at the next collective, but stop too and say why."""
    run_dir, port = tmp_path / "r", free_port()
    base = [sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir", str(run_dir), "--data-dir",
            str(tmp_path / "no-such-data"), "--quiet", "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen(base + ["--process-id", str(i)], cwd=REPO, env=env_with(1), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [1, 1], [err[-800:] for _, err in outs]
    assert "no-such-data" in outs[0][1]
    assert "another process failed to prepare the data" in outs[1][1], outs[1][1][-800:]


def test_a_signal_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tmp_path, data_dir):
    run_dir, port = tmp_path / "r", free_port()
    base = [sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir", str(run_dir), "--data-dir",
            str(data_dir), "--quiet", "--steps", "100000", "--eval-every", "100000",
            "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen(base + ["--process-id", str(i)], cwd=REPO, env=env_with(1), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    try:
        metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 240
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):  # training is under way
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "training did not start"
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)  # process 1 only
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes == [EXIT_INTERRUPTED, EXIT_INTERRUPTED], [p.stderr.read()[-1500:] for p in procs]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 5 <= summary["step"] < 100000
    assert load_for_inference(run_dir, best=False) is not None  # the checkpoint of that step reads back
    assert max(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == summary["step"]
