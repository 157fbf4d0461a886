"""The Colab notebook runs end to end on CPU with the tiny preset, through papermill."""
import json

import nbformat
import pytest

from guppy_jax.cli import REPO

NOTEBOOK = REPO / "notebooks" / "train_on_colab.ipynb"


def test_the_notebook_is_committed_without_outputs_and_matches_its_source():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert [c for c in code if "parameters" in c.metadata.get("tags", [])]
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_colab_notebook", REPO / "scripts" / "make_colab_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0


def test_the_notebook_trains_chats_evaluates_and_exports_on_cpu(tmp_path, data_dir):
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("torch")  # the export step writes the original's PyTorch format
    out = tmp_path / "executed.ipynb"
    params = {"PRESET": "tiny", "RUN_DIR": str(tmp_path / "run"), "DATA_DIR": str(data_dir),
              "EXPORT_DIR": str(tmp_path / "exported"), "EXTRA_FLAGS": ["--quiet"], "PROMPTS": ["hi guppy"]}
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=params, cwd=str(tmp_path),
                               kernel_name="python3", progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "precision: float32" in text and "Guppy> " in text and "keyword hit rate" in text
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"
    assert {p.name for p in (tmp_path / "exported").iterdir()} >= {"model.safetensors", "config.json",
                                                                    "tokenizer.json"}
    assert (tmp_path / "guppy_exported.zip").stat().st_size > 10_000
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the loss curve was not shown"
