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


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory, data_dir):
    """The Colab notebook executed on CPU with the tiny preset: (its directory, the executed notebook)."""
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("torch")  # the export step writes the original's PyTorch format
    where = tmp_path_factory.mktemp("colab")
    out = where / "executed.ipynb"
    params = {"PRESET": "tiny", "RUN_DIR": str(where / "run"), "DATA_DIR": str(data_dir),
              "EXPORT_DIR": str(where / "exported"), "EXTRA_FLAGS": ["--quiet"], "PROMPTS": ["hi guppy"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(REPO))  # the kernel finds this checkout, installed or not
        patch.delenv("GUPPY_DEBUG", raising=False)  # the notebook as a user runs it
        papermill.execute_notebook(str(NOTEBOOK), str(out), parameters=params, cwd=str(where),
                                   kernel_name="python3", progress_bar=False)
    return where, nbformat.read(out, as_version=4)


def output_texts(notebook) -> list[str]:
    """Every code cell output as text: streams (stdout, stderr), displayed text and tracebacks."""
    texts = []
    for cell in (c for c in notebook.cells if c.cell_type == "code"):
        for output in cell.outputs:
            texts.append(output.get("text", "") + output.get("data", {}).get("text/plain", "")
                         + "\n".join(output.get("traceback", [])))
    return texts


def test_the_notebook_trains_chats_evaluates_and_exports_on_cpu(colab_run):
    where, executed = colab_run
    text = "\n".join(output_texts(executed))
    assert "precision: float32" in text and "Guppy> " in text and "keyword hit rate" in text
    assert json.loads((where / "run" / "summary.json").read_text())["status"] == "finished"
    assert {p.name for p in (where / "exported").iterdir()} >= {"model.safetensors", "config.json",
                                                                 "tokenizer.json"}
    assert (where / "guppy_exported.zip").stat().st_size > 10_000
    images = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the loss curve was not shown"


def test_the_notebook_shows_no_library_warnings(colab_run):
    """Neither JAX's fork warning (the `!` cells fork the kernel) nor orbax's read-only notice
    (the chat and eval cells load the run read-only) reaches the reader."""
    _, executed = colab_run
    texts = output_texts(executed)
    assert any("Guppy> " in text for text in texts)  # the outputs were read
    leaks = [text for text in texts for bad in ("os.fork() was called", "WARNING:absl", "read only=")
             if bad in text]
    assert not leaks, leaks


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
