"""Training on a mesh of devices: forced CPU devices stand in for GPUs (tests/mesh_worker.py)."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from guppy_jax.training.checkpoints import load_for_inference
from guppy_jax.cli import REPO
from guppy_jax.core.config import PRESETS
from guppy_jax.training.mesh import MeshError, check_batch, fsdp_axis, make_mesh, mesh_shape


def with_devices(n: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "GUPPY_COMPILE_CACHE": "off"}
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_a_mesh_spec_names_data_and_fsdp_and_must_use_every_device():
    assert mesh_shape(None, 8) == {"data": 8, "fsdp": 1}
    assert mesh_shape("data=4,fsdp=2", 8) == {"data": 4, "fsdp": 2}
    assert mesh_shape("fsdp=2", 8) == {"data": 4, "fsdp": 2}
    for bad in ("data=3", "model=2", "data=0", "data=2,data=4", "data=x"):
        with pytest.raises(MeshError, match="--mesh"):
            mesh_shape(bad, 8)


def test_a_batch_that_does_not_split_over_the_devices_is_refused_clearly():
    check_batch(7, make_mesh({"data": 1, "fsdp": 1}))  # one device takes any batch
    four = np.array([jax.devices()[0]] * 4, dtype=object).reshape(4, 1)
    fake = type("FakeMesh", (), {"devices": four, "shape": {"data": 4, "fsdp": 1}})()
    with pytest.raises(MeshError, match="batch size 6 does not split over the 4 devices.*multiple of 4"):
        check_batch(6, fake)


def test_fsdp_splits_the_largest_axis_it_divides_and_keeps_the_rest_whole():
    assert fsdp_axis((384, 1152), 4) == 1 and fsdp_axis((4096, 384), 4) == 0
    assert fsdp_axis((6, 384), 4) == 1 and fsdp_axis((3,), 4) is None and fsdp_axis((), 4) is None
    assert fsdp_axis((384, 1152), 1) is None


def test_1_2_4_and_8_devices_train_alike_in_float32_with_dropout():
    """Measured: losses within 2.4e-6 and params within 6.6e-7 of one device after 20 steps;
    the only difference is the order of the cross-device sums (dropout masks are the same
    whatever the split: JAX's random bits do not depend on sharding)."""
    got = json.loads(with_devices(8, "-m", "tests.mesh_worker", "same-training", "float32", "dropout").stdout)
    for n, r in got.items():
        assert r["loss_diff"] <= 1e-5, f"{n} devices: losses {r['loss_diff']:.2e} from one device's"
        assert r["param_diff"] <= 5e-6, f"{n} devices: params {r['param_diff']:.2e} from one device's"
        assert r["compiles"] == 1, f"{n} devices: the train step compiled {r['compiles']} times"


def test_in_float64_without_dropout_devices_agree_to_1e_12():
    got = json.loads(with_devices(8, "-m", "tests.mesh_worker", "same-training", "float64", "nodropout").stdout)
    for n, r in got.items():
        assert r["loss_diff"] <= 1e-12 and r["param_diff"] <= 1e-12, (n, r)


def test_the_loss_is_the_global_token_mean_not_a_mean_of_device_means():
    got = json.loads(with_devices(4, "-m", "tests.mesh_worker", "global-mean").stdout)
    assert len(set(got["real_per_device"])) > 1  # the devices hold different numbers of real tokens
    assert abs(got["on_mesh"] - got["alone"]) <= 1e-5, got
    # the classic bug would give this instead; the batch is built so that the two differ
    assert abs(got["mean_of_means"] - got["alone"]) > 1e-3, got


def _train(run_dir, data_dir, devices: int, *flags: str):
    return with_devices(devices, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir", str(run_dir),
                        "--data-dir", str(data_dir), "--quiet", *flags)


def _params(run_dir):
    return jax.tree_util.tree_leaves(load_for_inference(run_dir, best=False)[1])


def test_a_checkpoint_from_4_devices_resumes_on_4_2_and_1(tmp_path, data_dir):
    whole = tmp_path / "whole"
    _train(whole, data_dir, 4)
    half = tmp_path / "half"
    _train(half, data_dir, 4, "--stop-after", "10")
    resumed = {}
    for n in (4, 2, 1):
        resumed[n] = tmp_path / f"on{n}"
        shutil.copytree(half, resumed[n])
        _train(resumed[n], data_dir, n, "--resume")
        summary = json.loads((resumed[n] / "summary.json").read_text())
        assert summary["devices"] == n and summary["step"] == 30 and summary["compiles"]["train_step"] == 1
    want, lr = _params(whole), PRESETS["tiny"].optim.lr
    for n, run_dir in resumed.items():
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(_params(run_dir), want))
        if n == 4:
            assert diff == 0.0, f"resumed on the same 4 devices: params {diff:.2e} from the uninterrupted run"
        else:  # another split sums in another order: float32 rounding, nothing more. Adam moves a
            # weight by about lr a step whatever its gradient's size, so rounding in a gradient that
            # nearly cancels shows up amplified; a wrong batch or a lost step would move weights by ~lr
            assert diff <= 0.01 * lr, f"resumed on {n} devices: params {diff:.2e} from the uninterrupted run"


def test_train_says_how_many_devices_and_which_mesh_and_refuses_a_bad_split(tmp_path, data_dir):
    done = with_devices(2, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir", str(tmp_path / "r"),
                        "--data-dir", str(data_dir), "--steps", "2", "--eval-every", "2")
    assert "on 2 cpu devices, mesh data=2 x fsdp=1" in done.stdout
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=3", "GUPPY_COMPILE_CACHE": "off"}
    bad = subprocess.run([sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--run-dir",
                          str(tmp_path / "b"), "--data-dir", str(data_dir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "batch size 8 does not split over the 3 devices" in bad.stderr, bad.stderr


def test_place_state_puts_numpy_leaves_on_the_mesh_too():
    """A state built from numpy weights (as from a converted checkpoint) must not keep host
    arrays: the first step's output would then be placed differently, and the step compile twice."""
    from guppy_jax.core.config import PRESETS, OptimConfig
    from guppy_jax.training.mesh import place_state
    from guppy_jax.core.model import init_params
    from guppy_jax.core.steps import create_state
    cfg = PRESETS["tiny"].model
    host = jax.device_get(init_params(cfg, jax.random.key(0)))
    state = place_state(create_state(cfg, OptimConfig(), host), make_mesh({"data": 1, "fsdp": 1}))
    leaves = jax.tree_util.tree_leaves(state)
    assert leaves and all(isinstance(x, jax.Array) and isinstance(x.sharding, jax.sharding.NamedSharding)
                          for x in leaves if isinstance(x, (jax.Array, np.ndarray)))
    assert not any(type(x) is np.ndarray for x in leaves)
