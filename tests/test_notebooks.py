"""The notebooks: the Colab training notebook runs end to end on CPU with the tiny preset (papermill),
and the walkthrough notebook is exactly what docs/walkthrough.md generates."""
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


def test_the_notebook_trains_chats_evaluates_and_exports_on_cpu(tmp_path, data_dir, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel finds this checkout, installed or not
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


WALKTHROUGH = REPO / "notebooks" / "walkthrough.ipynb"
COLAB_WALKTHROUGH = "https://colab.research.google.com/github/guppy-jax/guppy-jax/blob/main/notebooks/walkthrough.ipynb"


def load_script(path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_walkthrough_notebook_is_what_the_markdown_generates_without_outputs():
    assert load_script(REPO / "docs" / "make_notebook.py").main(["--check"]) == 0
    nb = nbformat.read(WALKTHROUGH, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    markdown = (REPO / "docs" / "walkthrough.md").read_text()
    assert len(code) == markdown.count("\n```python\n") and all(c.source in markdown for c in code)


def test_the_walkthrough_notebooks_first_code_cell_installs_the_project_on_colab():
    first = next(c for c in nbformat.read(WALKTHROUGH, as_version=4).cells if c.cell_type == "code")
    assert '"google.colab" in sys.modules' in first.source
    assert "git+https://github.com/guppy-jax/guppy-jax" in first.source


def test_readme_and_walkthrough_open_the_walkthrough_in_colab():
    for page in ("README.md", "docs/walkthrough.md"):
        assert COLAB_WALKTHROUGH in (REPO / page).read_text(), page
