"""Set up and run guppy-jax on a fresh machine that has Python 3.10+ and nothing else.

    python scripts/quickstart.py train [flags]   # python -m guppy_jax.train [flags], in .venv
    python scripts/quickstart.py test [args]     # the whole test suite (what CI runs), in .venv
    python scripts/quickstart.py test-lowest     # a smoke subset on the lowest versions we claim
    python scripts/quickstart.py test-colab      # the Colab notebook and that subset on Colab's versions

Each command makes (or reuses) its virtual environment first: `.venv` with the CPU build of
PyTorch 2.13.0 (the reference) and the project with its `torch`, `web` and `dev` extras (plus
`gpu` where `nvidia-smi` finds a GPU). An environment is rebuilt when pyproject.toml changes.
`test-lowest` and `test-colab` make `.venv-lowest` and `.venv-colab` with exact pins (LOWEST and
COLAB below) and check, before testing, that pip installed exactly those versions.
`test` also sets up the browser test: Debian's chromium and chromium-driver (apt-get, when
missing) and the page's npm libraries (`npm ci` in web/, when the lockfile changed). Only the
standard library is used here.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TORCH_CPU = "torch==2.13.0"  # a local CPU build here; an open range would pull several GB of CUDA
# The lowest versions pyproject.toml claims, installed together by `test-lowest`
# (tests/test_quickstart.py checks that these and pyproject.toml's floors agree).
LOWEST = {"jax": "0.4.35", "jaxlib": "0.4.35", "flax": "0.10.0", "optax": "0.2.5",
          "orbax-checkpoint": "0.10.0", "numpy": "2.0.2", "tokenizers": "0.19.1", "safetensors": "0.4.3",
          "tqdm": "4.66.0", "matplotlib": "3.9.0"}
LOWEST_TESTS = ["tests/test_config.py", "tests/test_model.py", "tests/test_steps.py", "tests/test_generate.py",
                "tests/test_data.py", "tests/test_datadir.py", "tests/test_checkpoint.py",
                "tests/test_precision.py", "tests/test_trainer.py", "tests/test_chat.py", "tests/test_eval.py",
                "tests/test_weight_files.py", "tests/test_compiled_sampler.py", "tests/test_nnx_model.py",
                "tests/test_distributed.py"]
# The versions Colab users run: the notebook installs guppy-jax beside what the runtime has and
# leaves that in place. Refresh this list (and its date) from a newer freeze; `test-colab` installs
# it, and tests/test_quickstart.py checks that it pins every core dependency at or above its floor.
COLAB_SOURCE = "Colab GPU runtime pip freeze, 2026-08"
COLAB = {"jax": "0.7.2", "jaxlib": "0.7.2", "flax": "0.11.2", "optax": "0.2.8", "orbax-checkpoint": "0.12.4",
         "numpy": "2.1.3", "tokenizers": "0.22.2", "safetensors": "0.8.0", "tqdm": "4.67.1",
         "matplotlib": "3.10.0", "torch": TORCH_CPU.split("==")[1]}
# tqdm is not among the versions this list was taken from: 4.67.1 stands in for it (a current
# release, above our floor). Where they cannot be Colab's here: Colab runs Python 3.13, which does not install on this
# machine, so `.venv-colab` is made with this machine's Python; Colab's jaxlib comes with the
# cuda12 plugin, this one is the CPU jaxlib of the same version; and Colab has torch 2.11, whose
# PyPI build pulls several GB of CUDA libraries, so the reference is tested at the CPU pin above.
# The notebook, executed once with the tiny preset as the suite executes it (what it shows, and
# that no library warning reaches the reader), the walkthrough's notebook executed end to end
# under papermill (the main suite runs the same cells from the Markdown) and its exercises'
# checks, then the core tests.
COLAB_TESTS = ["tests/test_notebooks.py::test_the_notebook_trains_chats_evaluates_and_exports_on_cpu",
               "tests/test_notebooks.py::test_the_notebook_shows_no_library_warnings",
               "tests/test_walkthrough_notebook.py", "tests/test_course.py",
               *(test for test in LOWEST_TESTS if test != "tests/test_distributed.py")]
# (Colab trains in one process: multi-process runs are tested on the newest and the lowest versions.)


def say(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args], cwd=REPO, check=True)


def venv(folder: str, recipe: list[list[str]]) -> Path:
    """A virtual environment built from `recipe` (lists of pip arguments), rebuilt when the
    recipe or pyproject.toml changes."""
    path = REPO / folder
    python = path / "bin" / "python"
    stamp = hashlib.sha256(((REPO / "pyproject.toml").read_text() + repr(recipe)).encode()).hexdigest()
    stamp_file = path / ".quickstart-stamp"
    if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return python
    say(f"making {folder} (a few minutes, once)")
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip(python, "--upgrade", "pip")
    for args in recipe:
        pip(python, *args)
    stamp_file.write_text(stamp + "\n")
    return python


def main_venv() -> Path:
    extras = "torch,web,dev" + (",gpu" if shutil.which("nvidia-smi") else "")
    return venv(".venv", [[TORCH_CPU], ["-e", f".[{extras}]"]])


def browser_setup() -> None:
    """What tests/test_web.py needs besides Python: Debian's chromium and its chromedriver, and
    web/node_modules from web/package-lock.json. Where they cannot be installed, that test fails."""
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        say("installing chromium and chromium-driver (apt-get, once)")
        sudo = [] if not hasattr(os, "geteuid") or os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=False)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=False)
    web = REPO / "web"
    stamp = hashlib.sha256((web / "package-lock.json").read_bytes()).hexdigest()
    stamp_file = web / "node_modules" / ".quickstart-stamp"
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        return
    if not shutil.which("npm"):
        say("npm not found: install node and npm, or the browser test will fail")
        return
    say("installing the page's libraries (npm ci in web/)")
    if subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=web).returncode == 0:
        stamp_file.write_text(stamp + "\n")


def run(python: Path, *args: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run([str(python), *args], cwd=REPO, env=env).returncode


def pinned_venv(folder: str, pins: dict[str, str], *extra: str) -> Path | None:
    """`folder` with exactly `pins` (and `extra`, unpinned), resolved together so that nothing
    is upgraded past a pin, and the project on top without its dependencies. None, with what
    differs printed, when the installed versions are not the pins."""
    python = venv(folder, [[*(f"{name}=={version}" for name, version in pins.items()), *extra],
                           ["--no-deps", "-e", "."]])
    probe = "import json, sys; from importlib.metadata import version\n" \
            "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    found = json.loads(subprocess.run([str(python), "-c", probe, *pins], check=True, capture_output=True,
                                      text=True).stdout)
    wrong = {name: found[name] for name, version in pins.items() if found[name].split("+")[0] != version}
    if wrong:  # "+cpu", the local build's label, is not a difference
        say(f"{folder} does not have the pinned versions: " +
            ", ".join(f"{name} {found[name]}, pinned {pins[name]}" for name in wrong))
        return None
    return python


def workers(args: list[str]) -> list[str]:
    """pytest-xdist's flags: one worker per core (at most two; CI has two), each test file kept
    on one worker (the walkthrough's cells share one namespace, and a module's fixtures are
    built once). None when the caller chose its own -n or -p no:xdist."""
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) or "no:xdist" in a for a in args):
        return []
    return ["-n", str(min(2, os.cpu_count() or 1)), "--dist", "loadfile"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("train", "test", "test-lowest", "test-colab"):
        print(__doc__.strip().split("\n\n")[1])
        return 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return run(main_venv(), "-m", "guppy_jax.train", *rest)
    if command == "test":
        python = main_venv()
        browser_setup()
        return run(python, "-m", "pytest", "-q", *workers(rest), *rest)
    if command == "test-lowest":
        python = pinned_venv(".venv-lowest", LOWEST, "pytest>=8", "pytest-xdist>=3.6")
        return 1 if python is None else run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                            *workers(rest), *LOWEST_TESTS, *rest)
    python = pinned_venv(".venv-colab", COLAB, "pytest>=8", "pytest-xdist>=3.6", "papermill>=2.6",
                         "ipykernel>=6.29", "nbformat>=5.10", "sybil>=9")
    if python is None:
        return 1
    # papermill's kernel "python3" is this environment's Python, not one a kernelspec elsewhere names
    env = {**os.environ, "JUPYTER_DATA_DIR": str(REPO / ".venv-colab" / "share" / "jupyter"),
           "GUPPY_WALKTHROUGH_NOTEBOOK": "1"}  # run the walkthrough's notebook, not only its Markdown
    return run(python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *workers(rest), *COLAB_TESTS, *rest,
               env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
