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
    assert "max |loss diff|" in capsys.readouterr().out
