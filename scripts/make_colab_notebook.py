"""Write notebooks/train_on_colab.ipynb from the cells below (outputs are never committed).

    python scripts/make_colab_notebook.py          # rewrite the notebook
    python scripts/make_colab_notebook.py --check  # exit 1 if the committed notebook differs

The cells live here, as text, so that a change to the notebook is a reviewable diff.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "train_on_colab.ipynb"

CELLS = [
    ("markdown", """# Train GuppyLM on a Colab GPU, then talk to it

This notebook trains the original GuppyLM recipe (`guppy-9m`: 8.7M parameters, batch 32,
10,000 steps) with `python -m guppy_jax.train`, draws the loss curve, chats with the fish,
runs the personality eval, exports the weights in the original PyTorch format, and offers
everything as a download.

**Runtime > Change runtime type > T4 GPU** first. On a T4, which has no fast bfloat16, the
run computes in float16 with dynamic loss scaling (the same rule as PyTorch's GradScaler);
on an A100 or newer, in bfloat16; on a CPU, in float32 (and it is slow: pick the `cpu`
preset below)."""),
    ("parameters", """# Settings (a tagged "parameters" cell: the test suite runs this notebook on CPU with PRESET="tiny")
PRESET = "guppy-9m"   # the original recipe; "cpu" trains a smaller model in minutes, "tiny" in seconds
RUN_DIR = "runs/guppy"
DATA_DIR = None       # None: generate the Guppy data here (60,000 conversations, a few seconds)
EXTRA_FLAGS = []      # any train flag, e.g. ["--steps", "2000"] or ["--resume"]
PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry", "do you like the cat"]
EXPORT_DIR = "exported"
PREALLOCATE = False   # True lets JAX take 75% of GPU memory up front (faster to start, greedy)"""),
    ("markdown", """## 1. Install

Colab's own `jax` and `torch` stay as they are; only guppy-jax and what it lacks are added."""),
    # The `!` cells below start a shell with os.fork(). Once JAX runs in this kernel (section 2
    # on), it warns at every fork of the kernel that a forked JAX would deadlock; a `!` child only
    # starts a shell, which never touches JAX, so each `!` cell would print a RuntimeWarning that
    # is a false alarm. The cell therefore ignores exactly that warning, before JAX is imported
    # (in this kernel only: the commands the `!` cells run still warn as they would).
    # This is the clearest of the ways out for a reader: one line, and the cells keep the `!`
    # everyone knows. A helper running the commands through subprocess would lose what `!` gives
    # the train cell (a terminal for the progress bar, Ctrl-C reaching train so that it saves), and
    # ordering the cells so that JAX is not imported before a `!` breaks as soon as a cell is re-run.
    ("code", """import os
import subprocess
import sys
import warnings

IN_COLAB = "google.colab" in sys.modules
# the `!` cells fork this kernel to start a shell; JAX, once running here, warns at each fork,
# a false alarm when the child only starts a shell
warnings.filterwarnings("ignore", message=r"os\\.fork\\(\\) was called", category=RuntimeWarning)
if not PREALLOCATE:
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # read when JAX starts, here and in the runs below
if IN_COLAB:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/guppy-jax/guppy-jax"],
                   check=True)
import guppy_jax

print("guppy-jax", guppy_jax.__version__)"""),
    ("markdown", "## 2. The accelerator, and the precision chosen for it"),
    ("code", """import jax

from guppy_jax.core.precision import resolve

device = jax.devices()[0]
print("JAX", jax.__version__, "sees:", device.platform, device.device_kind)
dtype, why = resolve("auto", device)
print(f"precision: {dtype} ({why})")
if device.platform == "gpu":
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used", "--format=csv"])"""),
    ("markdown", """## 3. Train

The progress bar shows the loss, the learning rate, tokens per second and (in float16) the
loss scale. Interrupting the cell saves a checkpoint; add `"--resume"` to `EXTRA_FLAGS` to go on."""),
    ("code", """flags = ["--preset", PRESET, "--run-dir", RUN_DIR, *EXTRA_FLAGS]
if DATA_DIR:
    flags += ["--data-dir", DATA_DIR]
if not PREALLOCATE:
    flags += ["--no-preallocate"]
!{sys.executable} -m guppy_jax.train {" ".join(flags)}"""),
    ("code", """import json
from pathlib import Path

summary = json.loads((Path(RUN_DIR) / "summary.json").read_text())
print({k: summary.get(k) for k in ("status", "step", "wall_s", "best_eval_loss", "dtype", "loss_scale")})
assert summary["status"] == "finished", "the run did not finish: see the output above"
"""),
    ("markdown", "## 4. The loss curve"),
    ("code", """from IPython.display import Image, display

display(Image(filename=str(Path(RUN_DIR) / "loss_curve.png")))"""),
    ("markdown", "## 5. Talk to Guppy\n\nEdit `PROMPTS` above, or call `fish.answer(\"...\")` in a new cell."),
    ("code", """from guppy_jax.chat import Chatter

fish = Chatter(RUN_DIR, temperature=0.7, top_k=50)
for prompt in PROMPTS:
    answer, _ = fish.answer(prompt)
    print(f"You> {prompt}\\nGuppy> {answer}\\n")"""),
    ("markdown", "## 6. The personality eval\n\nGreedy answers to 36 prompts the model never saw in training."),
    ("code", """from guppy_jax.cli import DEFAULT_DATA
from guppy_jax.analysis.personality import run_eval

result = run_eval(RUN_DIR, data_dir=DATA_DIR or DEFAULT_DATA)
print(f"keyword hit rate {result['keyword_hit_rate']:.1%}, lowercase {result['lowercase_share']:.1%}, "
      f"short {result['short_share']:.1%}, eval loss {result.get('eval_loss', float('nan')):.3f}")
for row in result["rows"][:5]:
    print(("hit " if row["hit"] else "miss"), row["prompt"], "->", row["answer"])"""),
    ("markdown", """## 7. Export with the original's keys and download

`model.safetensors` (the original state-dict keys), `config.json` and `tokenizer.json` load
into `reference_torch` with `strict=True` (read the weights with `safetensors.torch.load_file`).
Add `--format bin` for the original's `pytorch_model.bin` instead."""),
    ("code", """!{sys.executable} -m guppy_jax.convert export --run-dir {RUN_DIR} --out {EXPORT_DIR} --force
import shutil

archive = shutil.make_archive("guppy_run", "zip", root_dir=".", base_dir=RUN_DIR)
exported = shutil.make_archive("guppy_exported", "zip", root_dir=".", base_dir=EXPORT_DIR)
print("wrote", archive, "and", exported)
if IN_COLAB:
    from google.colab import files

    files.download(exported)
    files.download(archive)"""),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}, "accelerator": "GPU",
                        "colab": {"provenance": [], "gpuType": "T4"}})
    for kind, source in CELLS:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"  # stable ids, so a rebuild is byte-identical
    return nb


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = nbformat.writes(build())
    if "--check" in argv:
        same = NOTEBOOK.exists() and NOTEBOOK.read_text() == text
        print("up to date" if same else f"{NOTEBOOK} differs: run python scripts/make_colab_notebook.py")
        return 0 if same else 1
    NOTEBOOK.write_text(text)
    print(f"wrote {NOTEBOOK}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
