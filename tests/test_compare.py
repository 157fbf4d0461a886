"""The side-by-side comparison on the tiny preset."""
import json

import pytest

from guppy_jax import compare

pytest.importorskip("torch")


def test_compare_writes_png_and_json_and_agrees(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--preset", "tiny", "--steps", "8", "--data-dir", str(data_dir),
                         "--out", str(out)]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert len(res["jax_losses"]) == len(res["torch_losses"]) == 8
    assert res["max_abs_diff"] < 1e-4  # same weights, same batches, dropout off
    assert (out / "compare.png").stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "max |loss diff|" in text and "median step" in text and "NNX" not in text


def test_compare_puts_nnx_beside_linen_and_pytorch_with_a_table_of_step_times(data_dir, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare.main(["--preset", "tiny", "--steps", "6", "--data-dir", str(data_dir), "--out", str(out),
                         "--nnx", "--quiet"]) == 0
    res = json.loads((out / "compare.json").read_text())
    assert len(res["nnx_losses"]) == len(res["jax_losses"]) == 6
    assert res["nnx_max_abs_diff"] < 1e-5  # the same weights and batches, dropout off
    assert set(res["median_step_ms"]) == {"jax", "nnx", "torch"}
    text = capsys.readouterr().out
    for label in ("JAX, Flax Linen", "JAX, Flax NNX", "PyTorch reference", "median step", "NNX - Linen"):
        assert label in text
