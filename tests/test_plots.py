"""The three pictures (loss curve, attention grid, JAX-vs-PyTorch comparison): each writes its
PNG and leaves matplotlib's backend alone, so a notebook that calls one keeps its inline plots."""
import json

import matplotlib
import numpy as np
import pytest

from guppy_jax.analysis.comparison import plot_compare
from guppy_jax.training.plots import plot_attention, plot_losses

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def marker_backend():
    """A backend no plotting function would pick: if one still calls matplotlib.use, it shows."""
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield "svg"
    matplotlib.use(before, force=True)


def written_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5_000


def test_the_loss_curve_is_written_and_the_backend_is_unchanged(marker_backend, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 5.0 / s} for s in range(1, 41)] + [{"step": 40, "eval_loss": 0.2}]
    metrics.write_text("\n".join(json.dumps(r) for r in rows) + "\n{\"step\": 41, \"lo")  # a torn last line
    png = plot_losses(metrics, tmp_path / "loss.png")
    assert png == tmp_path / "loss.png" and written_png(png)
    assert matplotlib.get_backend() == marker_backend


def test_the_attention_grid_is_written_and_the_backend_is_unchanged(marker_backend, tmp_path):
    rs = np.random.RandomState(0)
    maps_LHTT = np.tril(rs.rand(2, 3, 5, 5))
    maps_LHTT /= maps_LHTT.sum(-1, keepdims=True)
    png = plot_attention(maps_LHTT, list("abcde"), tmp_path / "maps.png", "title")
    assert png == tmp_path / "maps.png" and written_png(png)
    assert matplotlib.get_backend() == marker_backend


@pytest.mark.parametrize("nnx", [False, True])
def test_the_comparison_is_written_and_the_backend_is_unchanged(marker_backend, tmp_path, nnx):
    losses = np.linspace(5.0, 3.0, 20)
    res = {"steps": 20, "config": "micro", "dropout": False, "jax_losses": losses.tolist(),
           "torch_losses": (losses + 1e-6).tolist()}
    if nnx:
        res["nnx_losses"] = (losses - 1e-7).tolist()
    plot_compare(res, tmp_path / "compare.png")
    assert written_png(tmp_path / "compare.png")
    assert matplotlib.get_backend() == marker_backend
