"""The chat command on a tiny trained run."""
import logging
import os
import subprocess
import sys

import absl.logging
import orbax.checkpoint as ocp
import pytest

from guppy_jax import chat
from guppy_jax.chat import Chatter
from guppy_jax.training.checkpoints import load_for_inference
from guppy_jax.cli import REPO


def test_chat_single_shot(trained, capsys):
    assert chat.main(["--checkpoint", str(trained.run_dir), "--prompt", "hi guppy", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Guppy> ") and len(out.strip()) > len("Guppy>")


def test_chat_long_prompt_is_cut_with_notice(trained, capsys):
    assert chat.main(["--checkpoint", str(trained.run_dir), "--prompt", "blub " * 200]) == 0
    captured = capsys.readouterr()
    assert "only its last" in captured.err and captured.out.startswith("Guppy> ")


def test_chat_interactive(trained, capsys, monkeypatch):
    lines = iter(["hello", "are you hungry", "quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert chat.main(["--checkpoint", str(trained.run_dir)]) == 0
    assert capsys.readouterr().out.count("Guppy> ") == 2


def test_chat_without_checkpoint_explains(tmp_path, capsys):
    assert chat.main(["--checkpoint", str(tmp_path / "none")]) == 1
    assert "python -m guppy_jax.train" in capsys.readouterr().err


def test_chat_quiet_prompt_prints_the_answer_alone(trained, capsys):
    flags = ["--run-dir", str(trained.run_dir), "--prompt", "hi guppy", "--seed", "1"]
    assert chat.main(flags) == 0
    answer = capsys.readouterr().out.removeprefix("Guppy> ")
    assert chat.main(flags + ["--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == answer and "Guppy>" not in captured.out and captured.err == ""


def test_chat_quiet_interactive_prints_the_answers_alone(trained, capsys, monkeypatch):
    typed, prompts = iter(["hello", "", "are you hungry"]), []

    def read_line(prompt=""):
        prompts.append(prompt)
        try:
            return next(typed)
        except StopIteration:
            raise EOFError from None  # Ctrl-D
    monkeypatch.setattr("builtins.input", read_line)
    assert chat.main(["--run-dir", str(trained.run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert prompts and set(prompts) == {""}  # no You> prompt
    fish = Chatter(trained.run_dir)  # chat's defaults: the same answers, in the same order
    assert out == "".join(fish.answer(message)[0] + "\n" for message in ("hello", "are you hungry"))
    assert not any(chatter in out for chatter in ("You>", "Guppy>", "Talk to Guppy"))


def quiet_environment(tmp_path) -> dict:
    """A user's environment: no debugging, a compile cache of the test's own."""
    env = {k: v for k, v in os.environ.items() if k != "GUPPY_DEBUG"}
    return {**env, "GUPPY_COMPILE_CACHE": str(tmp_path / "cache")}


def test_the_chat_command_writes_nothing_to_stderr(trained, tmp_path):
    """No library warning (orbax's read-only notice through absl, JAX's fork warning) reaches the user."""
    done = subprocess.run([sys.executable, "-m", "guppy_jax.chat", "--run-dir", str(trained.run_dir),
                           "--prompt", "hi"], cwd=REPO, env=quiet_environment(tmp_path), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("Guppy> ")
    assert done.stderr == ""


@pytest.fixture
def absl_warnings(caplog, monkeypatch):
    """The warnings logged through absl's logger (whatever level an earlier test left it at), as a
    user of the Python API who is not debugging would get them."""
    monkeypatch.delenv("GUPPY_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["notebook"])  # no --debug
    caplog.set_level(logging.WARNING, logger="absl")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "absl"]


def test_loading_a_run_through_the_chatter_api_logs_no_read_only_warning(trained, absl_warnings):
    fish = Chatter(trained.run_dir, temperature=0)
    assert isinstance(fish.answer("hi guppy")[0], str)
    assert not [m for m in absl_warnings() if "read only" in m]


def test_other_warnings_still_show_while_a_run_is_loaded_and_after(trained, absl_warnings, monkeypatch):
    made = ocp.CheckpointManager

    def made_with_a_warning(*args, **kwargs):
        absl.logging.warning("a real problem")
        return made(*args, **kwargs)
    monkeypatch.setattr(ocp, "CheckpointManager", made_with_a_warning)
    load_for_inference(trained.run_dir)
    absl.logging.warning("Given directory is read only=%s", "/somewhere/else")  # no filter left behind
    assert absl_warnings() == ["a real problem", "a real problem", "Given directory is read only=/somewhere/else"]


def test_debugging_shows_the_libraries_logs_as_they_are(trained, absl_warnings, monkeypatch):
    monkeypatch.setenv("GUPPY_DEBUG", "1")
    load_for_inference(trained.run_dir)
    assert [m for m in absl_warnings() if "read only" in m] == [
        f"Given directory is read only={(trained.run_dir / sub).resolve()}" for sub in ("checkpoints", "best")]


@pytest.fixture
def weights_never_loaded(monkeypatch):
    """Usage errors are found before the weights are read: reading them fails the test."""
    import guppy_jax.training.checkpoints

    def load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the flags were checked")
    monkeypatch.setattr(guppy_jax.training.checkpoints, "load_for_inference", load)


@pytest.mark.parametrize("flags, says", [(["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
                                         (["--max-new-tokens", "64"], "--max-new-tokens must be in [1, 63]"),
                                         (["--seed", str(2**64)], "--seed must be in")])
def test_out_of_range_flags_are_usage_errors_found_before_the_weights_load(trained, capsys, weights_never_loaded,
                                                                          flags, says):
    assert chat.main(["--run-dir", str(trained.run_dir), "--prompt", "hi", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1
