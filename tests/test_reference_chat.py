"""reference_torch.chat, the start-up peer of guppy_jax.chat, on an exported tiny run."""
import pytest

from guppy_jax import chat, convert

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    assert convert.main(["export", "--run-dir", str(trained.run_dir), "--out", str(out), "--force"]) == 0
    return out


@pytest.mark.parametrize("cached", [False, True])
def test_the_reference_chat_answers_greedy_like_guppy_jax(trained, exported, capsys, cached):
    from reference_torch import chat as torch_chat
    for prompt in ("hi guppy", "are you hungry"):
        assert chat.main(["--run-dir", str(trained.run_dir), "--prompt", prompt, "--temperature", "0"]) == 0
        want = capsys.readouterr().out
        assert torch_chat.main(["--model-dir", str(exported), "--prompt", prompt, "--temperature", "0",
                                "--max-new-tokens", str(trained_answer_len(trained))]
                               + (["--cached"] if cached else [])) == 0
        assert capsys.readouterr().out == want, prompt


def trained_answer_len(trained):
    from guppy_jax.training.checkpoints import read_run_config
    from guppy_jax.core.generate import default_answer_len
    return default_answer_len(read_run_config(trained.run_dir).model)


def test_the_reference_chat_explains_a_missing_export(tmp_path, capsys):
    from reference_torch import chat as torch_chat
    assert torch_chat.main(["--model-dir", str(tmp_path), "--prompt", "hi"]) == 2
    assert "guppy_jax.convert export" in capsys.readouterr().err
