"""The benchmark runs every comparison on the tiny preset (nothing is timed here)."""
import json

import pytest

from guppy_jax import bench

from guppy_jax.analysis import timing
from guppy_jax.core.config import PRESETS

pytest.importorskip("torch")


def test_bench_prints_table_and_writes_json(data_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--preset", "tiny", "--steps", "3", "--no-torch-compile", "--device", "cpu",
                       "--data-dir", str(data_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("same work", "end to end", "torch eager", "jax jit", "generation", "ratios"):
        assert label in text
    res = json.loads(out.read_text())
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
                       "--quiet"]) == 0
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
