"""The benchmark and the side-by-side comparison run on the tiny config (nothing is timed here)."""
import json

import pytest

from guppy_jax import bench, compare
from guppy_jax.config import PRESETS
from guppy_jax.prepare import prepare

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    prepare(out=out, samples=800, seed=0, vocab_size=PRESETS["tiny"].model.vocab_size, quiet=True)
    return out


def test_bench_prints_table_and_writes_json(data_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main(["--config", "tiny", "--steps", "3", "--no-torch-compile", "--device", "cpu",
                       "--data-dir", str(data_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("same work", "end to end", "torch eager", "jax jit", "generation", "ratios"):
        assert label in text
    res = json.loads(out.read_text())
    frameworks = {r["framework"] for r in res["rows"]}
    assert {"jax jit", "jax jit (4 steps/call)", "torch eager", "jax packed", "torch original-style"} <= frameworks
    assert res["ratios"]["end_to_end_jax_over_torch_original"] > 0
    assert all(r["tokens_per_s"] > 0 for r in res["rows"])
    assert set(res["ratios"]) >= {"same_work_jax_over_torch_eager", "end_to_end_jax_over_torch_original",
                                  "generation_cached_jax_over_reference"}


def test_flops_per_token_counts_the_tied_head():
    cfg = PRESETS["guppy-9m"].model
    matmul_params = cfg.num_params() - cfg.max_seq_len * cfg.d_model
    assert bench.flops_per_token(cfg, 48) == 6 * matmul_params + 12 * 6 * 48 * 384


def test_compare_writes_png_and_json_and_agrees(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--config", "tiny", "--steps", "8", "--data-dir", str(data_dir),
                         "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert len(res["jax_losses"]) == len(res["torch_losses"]) == 8
    assert res["max_abs_diff"] < 1e-4  # same weights, same batches, dropout off
    assert (out / "compare.png").stat().st_size > 10_000
    assert "max |loss diff|" in capsys.readouterr().out
