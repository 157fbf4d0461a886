"""The quick start's lowest versions are the floors pyproject.toml claims, and its Colab versions
pin every core dependency at or above them."""
import re
import tomllib

from guppy_jax.cli import REPO


def claimed_floors() -> dict[str, str]:
    """pyproject.toml's core dependencies, each with its floor ("flax": "0.10")."""
    claimed = {}
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, floor = re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement).groups()
        claimed[name] = floor
    return claimed


def test_the_tested_lowest_versions_are_the_claimed_floors(script):
    quickstart = script("quickstart")
    claimed = claimed_floors()
    pinned = {name: version for name, version in quickstart.LOWEST.items() if name != "jaxlib"}
    assert set(claimed) == set(pinned)
    for name, floor in claimed.items():  # "flax>=0.10" is met exactly by 0.10.0
        assert pinned[name].split(".")[:len(floor.split("."))] == floor.split("."), (name, floor, pinned[name])
    assert all((REPO / path).exists() for path in quickstart.LOWEST_TESTS)


def test_usage_is_printed_for_an_unknown_command(script, capsys):
    assert script("quickstart").main(["fly"]) == 2
    usage = capsys.readouterr().out
    assert "quickstart.py train" in usage and "quickstart.py test-colab" in usage


def test_the_colab_versions_pin_every_core_dependency_at_or_above_its_floor(script):
    quickstart = script("quickstart")
    assert re.fullmatch(r"Colab GPU runtime pip freeze, \d{4}-\d{2}", quickstart.COLAB_SOURCE)
    pins = quickstart.COLAB
    assert all(re.fullmatch(r"\d+(\.\d+)+", version) for version in pins.values()), pins  # exact releases
    assert pins["jaxlib"] == pins["jax"]  # jax takes the jaxlib of its own release
    assert pins["torch"] == quickstart.TORCH_CPU.split("==")[1]  # the reference's CPU pin, not Colab's CUDA build
    for name, floor in claimed_floors().items():
        assert name in pins, f"{name} is a core dependency that test-colab leaves to pip"
        as_numbers = [int(part) for part in pins[name].split(".")]
        assert as_numbers >= [int(part) for part in floor.split(".")], (name, floor, pins[name])
    notebook_tests = [test for test in quickstart.COLAB_TESTS if test.startswith("tests/test_notebooks.py::")]
    assert "tests/test_notebooks.py::test_the_notebook_trains_chats_evaluates_and_exports_on_cpu" in notebook_tests
    course = ["tests/test_walkthrough_notebook.py", "tests/test_course.py"]  # on Colab's versions too
    assert quickstart.COLAB_TESTS == [*notebook_tests, *course,
                                      *(t for t in quickstart.LOWEST_TESTS if "distributed" not in t)]
    source = (REPO / "tests" / "test_notebooks.py").read_text()
    assert all(f"def {test.split('::')[1]}(" in source for test in notebook_tests)  # still there, by that name


def test_the_suites_run_on_two_workers_that_keep_each_file_together_unless_told_otherwise(script, monkeypatch):
    quickstart = script("quickstart")
    monkeypatch.setattr(quickstart.os, "cpu_count", lambda: 16)
    assert quickstart.workers(["-x"]) == ["-n", "2", "--dist", "loadfile"]  # CI's two cores, even on more
    monkeypatch.setattr(quickstart.os, "cpu_count", lambda: 1)
    assert quickstart.workers([]) == ["-n", "1", "--dist", "loadfile"]
    for own in (["-n", "4"], ["-n4"], ["--numprocesses=3"], ["-p", "no:xdist"]):
        assert quickstart.workers(own) == [], own  # the caller's choice stands
    assert "pytest-xdist>=3.6" in (quickstart.REPO / "pyproject.toml").read_text()  # the dev extra brings it
