"""The benchmark runs every comparison on the tiny preset (nothing is timed here)."""
import json

import pytest

from guppy_jax import bench

from guppy_jax.analysis import timing
from guppy_jax.core.config import PRESETS

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def bench_run(data_dir, tmp_path_factory):
    """One bench run on the tiny preset: (its printed text, its JSON)."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp("bench") / "b.json"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert bench.main(["--preset", "tiny", "--steps", "3", "--no-torch-compile", "--device", "cpu",
                           "--data-dir", str(data_dir), "--json", str(out)]) == 0
    return printed.getvalue(), json.loads(out.read_text())


@pytest.fixture
def bench_json(bench_run):
    return bench_run[1]


def test_bench_prints_table_and_writes_json(bench_run):
    text, res = bench_run
    for label in ("same work", "end to end", "torch eager", "jax jit", "generation", "ratios"):
        assert label in text
    frameworks = {r["framework"] for r in res["rows"]}
    assert {"jax jit", "jax jit (4 steps/call)", "torch eager", "jax packed", "torch original-style"} <= frameworks
    assert res["ratios"]["end_to_end_jax_over_torch_original"] > 0
    assert all(r["tokens_per_s"] > 0 for r in res["rows"])
    assert set(res["ratios"]) >= {"same_work_jax_over_torch_eager", "same_work_best_jax_over_torch_eager",
                                  "end_to_end_jax_over_torch_original", "generation_jax_over_torch_cached",
                                  "generation_jax_over_original", "decode_over_floor"}
    gen = res["generation"]
    for label in ("batch1", "batch_eval"):
        for decoder in ("jax_cached", "torch_cached", "torch_original"):
            assert gen[f"{label}_{decoder}"] > 0, (label, decoder)
    assert gen["weight_bytes"] == 4 * PRESETS["tiny"].model.num_params()
    assert gen["decode_step_ms"] > 0 and gen["floor_ms"] > 0 and gen["read_gb_per_s"] > 0
    assert "nnx split/merge" in text and "temp memory" in text


def test_bench_times_one_train_and_decode_step_in_linen_nnx_jit_and_nnx_split_merge(bench_json):
    apis = bench_json["apis"]
    for step in ("train", "decode"):
        rows = {r["api"]: r for r in apis["rows"] if r["step"] == step}
        assert {"linen jax.jit", "nnx nnx.jit", "nnx split/merge"} <= set(rows), step
        for row in rows.values():
            assert row["median_ms"] > 0 and row["first_call_s"] > row["median_ms"] / 1e3, row
            assert row["temp_bytes"] is None or row["temp_bytes"] >= 0
    train = {r["api"]: r for r in apis["rows"] if r["step"] == "train"}
    assert train["linen jax.jit"]["temp_bytes"] > 0  # XLA:CPU reports its memory plan
    ratios = bench_json["ratios"]
    for name in ("nnx_jit_over_linen", "nnx_split_merge_over_linen", "nnx_temp_memory_over_linen",
                 "decode_nnx_jit_over_linen", "decode_nnx_split_merge_over_linen"):
        assert ratios[name] > 0, name
    assert ratios["nnx_jit_over_linen"] == pytest.approx(train["nnx nnx.jit"]["median_ms"]
                                                         / train["linen jax.jit"]["median_ms"])


def test_flops_per_token_counts_the_tied_head():
    cfg = PRESETS["guppy-9m"].model
    matmul_params = cfg.num_params() - cfg.max_seq_len * cfg.d_model
    assert timing.flops_per_token(cfg, 48) == 6 * matmul_params + 12 * 6 * 48 * 384


def test_old_config_flag_still_works_and_bad_values_are_refused(capsys):
    args = bench.build_parser().parse_args(["--config", "tiny"])
    assert args.preset == "tiny"
    for bad in (["--steps", "0"], ["--batch-size", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.build_parser().parse_args(bad)
        assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_half_precision_is_timed_against_the_originals_autocast(data_dir, tmp_path):
    out = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--steps", "2", "--steps-per-call", "1", "--no-torch-compile",
                       "--device", "cpu", "--dtype", "float16", "--data-dir", str(data_dir), "--json", str(out),
                       "--quiet", "--no-nnx"]) == 0
    res = json.loads(out.read_text())
    assert res["dtype"] == "float16"
    amp = next(r for r in res["rows"] if r["framework"] == "torch AMP (float16)")
    assert amp["tokens_per_s"] > 0 and res["ratios"]["same_work_best_jax_over_torch_amp"] > 0


def test_end_to_end_is_also_timed_against_torch_compile(data_dir):
    import torch

    from guppy_jax.data.datadir import load_samples
    cfg = PRESETS["tiny"].model.replace(dropout=0.0)
    samples = load_samples(data_dir, cfg.max_seq_len, cfg.vocab_size)
    tokens_per_s, step_s = timing.end_to_end_torch(cfg, samples, 4, 2, torch.device("cpu"), compile_model=True)
    assert tokens_per_s > 0 and step_s > 0


def test_devices_mode_times_the_step_on_1_2_4_devices_and_asks_for_devices_it_lacks(data_dir, tmp_path):
    import os
    import subprocess
    import sys

    from guppy_jax.cli import REPO
    out = tmp_path / "d.json"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-m", "guppy_jax.bench", "--preset", "tiny", "--devices", "4", "--steps",
                           "2", "--data-dir", str(data_dir), "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["scaling"]
    assert [r["devices"] for r in rows] == [1, 2, 4] and all(r["step_ms"] > 0 for r in rows)
    assert rows[0]["efficiency"] == 1.0
    assert bench.main(["--preset", "tiny", "--devices", "4", "--data-dir", str(data_dir)]) == 2  # one device here
