"""The quick start's lowest versions are the floors pyproject.toml claims."""
import re
import tomllib

from guppy_jax.cli import REPO


def test_the_tested_lowest_versions_are_the_claimed_floors(script):
    quickstart = script("quickstart")
    claimed = {}
    for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, floor = re.fullmatch(r"([\w-]+)>=([\d.]+)", requirement).groups()
        claimed[name] = floor
    pinned = {name: version for name, version in quickstart.LOWEST.items() if name != "jaxlib"}
    assert set(claimed) == set(pinned)
    for name, floor in claimed.items():  # "flax>=0.10" is met exactly by 0.10.0
        assert pinned[name].split(".")[:len(floor.split("."))] == floor.split("."), (name, floor, pinned[name])
    assert all((REPO / path).exists() for path in quickstart.LOWEST_TESTS)


def test_usage_is_printed_for_an_unknown_command(script, capsys):
    assert script("quickstart").main(["fly"]) == 2
    assert "quickstart.py train" in capsys.readouterr().out
