"""The chat command on a tiny trained run."""
from guppy_jax import chat


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
