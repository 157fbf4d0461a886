"""`python -m guppy_jax.inspect`: the attention grid as a PNG and the next-token candidates,
on a trained run and with none, and one clear line (exit 2) for input it cannot take."""
import pytest
from PIL import Image

from guppy_jax import cli
from guppy_jax import inspect as guppy_inspect
from guppy_jax.analysis.attention_maps import PARITY_TOL


def max_diff_printed(out: str) -> float:
    return float(out.rsplit("max |diff| ", 1)[1].split()[0])


def test_a_trained_run_gives_the_png_and_candidates_per_position(trained, tmp_path, capsys):
    pytest.importorskip("torch")
    png = tmp_path / "maps.png"
    code = guppy_inspect.main(["--prompt", "what is the meaning of life", "--run-dir", str(trained.run_dir),
                               "--out", str(png)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert Image.open(png).size[0] > 500
    assert "likeliest next tokens" in out and "·life" in out
    assert max_diff_printed(out) <= PARITY_TOL
    assert "random weights" not in out


def test_with_no_run_it_uses_random_weights_and_says_so(data_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)  # the default run directory, runs/guppy, does not exist here
    code = guppy_inspect.main(["--prompt", "hi guppy", "--data-dir", str(data_dir), "--quiet"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_OK
    assert "random guppy-9m weights" in captured.err
    assert (tmp_path / "attention.png").stat().st_size > 10_000
    assert max_diff_printed(captured.out) <= PARITY_TOL


@pytest.mark.parametrize("flags, words", [
    (["--prompt", "   "], "the prompt is empty"),
    (["--prompt", "hi", "--run-dir", "no/such/run"], "no run in no/such/run"),
])
def test_bad_input_is_one_line_and_exit_2(flags, words, tmp_path, capsys):
    code = guppy_inspect.main(flags + ["--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_a_prompt_longer_than_the_context_is_exit_2(trained, tmp_path, capsys):
    code = guppy_inspect.main(["--prompt", "bubbles " * 200, "--run-dir", str(trained.run_dir),
                               "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "longer than the model's 64-token context" in err
    assert not (tmp_path / "x.png").exists()
