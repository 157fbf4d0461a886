"""Weight files: safetensors and PyTorch pickles read and written, configs flat or nested,
pickles holding Python objects refused without running them, half precision upcast."""
import argparse
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from guppy_jax.cli import REPO
from guppy_jax.core.config import PARITY_MODELS, ModelConfig
from guppy_jax.export.convert_weights import TIED_HEAD_KEY, key_map
from guppy_jax.export.weight_files import (WeightFileError, gist, is_safetensors, model_config_from, params_from_file,
                                    read_weights, write_weights)

CFG = PARITY_MODELS["micro"]


def random_state_dict(cfg: ModelConfig, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    sd = {key: rng.standard_normal(shape).astype(np.float32) for key, _, _, shape in key_map(cfg)}
    sd[TIED_HEAD_KEY] = sd["tok_emb.weight"].copy()
    return sd


def write_with_config(tmp_path: Path, sd: dict, fmt: str, config: dict | None = None) -> Path:
    name = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}[fmt]
    path = write_weights(sd, tmp_path / name, fmt)
    (tmp_path / "config.json").write_text(json.dumps(config if config is not None else CFG.to_dict()))
    return path


def test_safetensors_round_trip_is_bit_exact_with_every_key(tmp_path):
    sd = random_state_dict(CFG)
    path = write_with_config(tmp_path, sd, "safetensors")
    back, cfg, step = read_weights(path)
    assert cfg == CFG and step == 0 and set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == np.float32, key
        assert np.array_equal(back[key], value), key


def test_the_tied_head_is_its_own_copy_and_torch_reads_it(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = random_state_dict(CFG)
    path = write_with_config(tmp_path, sd, "safetensors")
    loaded = safetensors_torch.load_file(str(path))
    assert loaded[TIED_HEAD_KEY].data_ptr() != loaded["tok_emb.weight"].data_ptr()
    assert np.array_equal(loaded[TIED_HEAD_KEY].numpy(), sd["tok_emb.weight"])


def test_safetensors_is_recognised_by_content_too(tmp_path):
    path = write_with_config(tmp_path, random_state_dict(CFG), "safetensors")
    renamed = path.rename(tmp_path / "weights.bin")
    assert is_safetensors(renamed)
    assert set(read_weights(renamed)[0]) == set(random_state_dict(CFG))


def test_the_originals_nested_training_config_is_read_by_its_model_part(tmp_path):
    nested = {"model": {**CFG.to_dict(), "d_model": CFG.d_model}, "train": {"batch_size": 32, "lr": 3e-4}}
    assert model_config_from(nested, "config.json") == CFG
    path = write_with_config(tmp_path, random_state_dict(CFG), "safetensors", nested)
    params, cfg, _ = params_from_file(path)
    assert cfg == CFG and params["tok_emb"]["embedding"].shape == (CFG.vocab_size, CFG.d_model)


def test_a_wrong_shaped_tensor_is_refused_naming_file_and_tensor(tmp_path):
    sd = random_state_dict(CFG)
    sd["blocks.0.ffn.up.weight"] = sd["blocks.0.ffn.up.weight"][:, :-1].copy()
    path = write_with_config(tmp_path, sd, "safetensors")
    with pytest.raises(WeightFileError) as err:
        params_from_file(path)
    assert str(path) in str(err.value) and "blocks.0.ffn.up.weight: expected shape" in str(err.value)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.001])
def test_a_truncated_safetensors_file_is_refused_naming_it(tmp_path, keep):
    path = write_with_config(tmp_path, random_state_dict(CFG), "safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    with pytest.raises(WeightFileError) as err:
        read_weights(path)
    assert str(err.value).startswith(f"{path}: cannot be read as safetensors")
    assert "\n" not in str(err.value)


def test_bare_weights_without_a_config_are_refused(tmp_path):
    path = write_weights(random_state_dict(CFG), tmp_path / "model.safetensors", "safetensors")
    with pytest.raises(WeightFileError, match="needs a config.json beside it"):
        read_weights(path)


class _Payload:
    """Unpickling this would create the marker file: the attack a weights-only reader stops."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_a_pickle_holding_python_objects_is_refused_and_never_runs(tmp_path, how):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "payload-ran"
    path = tmp_path / "best_model.pt"
    payload = {"model_state_dict": {"tok_emb.weight": torch.zeros(2)}, "config": _Payload(marker)}
    if how == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(WeightFileError) as err:
        read_weights(path)
    message = str(err.value)
    assert not marker.exists(), "the pickle's payload ran"
    assert message.startswith(f"{path}: refused") and "guppy-jax loads weights only" in message
    assert "For a file you trust: pass --trust-pickle" in message and "safetensors" in message
    assert "will likely succeed" not in message and "\n" not in message
    if how == "torch":
        assert "os.makedirs" in message


def test_a_pickle_of_tensors_round_trips_and_a_damaged_one_is_explained(tmp_path):
    pytest.importorskip("torch")
    sd = random_state_dict(CFG)
    path = write_with_config(tmp_path, sd, "bin")
    back, cfg, _ = read_weights(path)
    assert cfg == CFG and all(np.array_equal(back[k].numpy(), v) for k, v in sd.items())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightFileError, match="cannot be read as a PyTorch checkpoint"):
        read_weights(path)


def test_nan_weights_are_refused(tmp_path):
    sd = random_state_dict(CFG)
    sd["norm.bias"][:2] = np.nan
    path = write_with_config(tmp_path, sd, "safetensors")
    with pytest.raises(WeightFileError, match=r"norm.bias \(2 values\)"):
        params_from_file(path)


# ----------------------------------------------------------------------------- the refusal's recipe
def recipe_from(message: str) -> tuple[str, Path]:
    """The Python code the refusal tells the user to run, and the file it says to import then."""
    code = re.search(r"in Python [^`]*`([^`]+)`", message)
    then = re.search(r"then import (\S+)$", message)
    assert code and then, message
    return code.group(1), Path(then.group(1))


@pytest.mark.parametrize("config", ["object", "namespace"])
def test_the_refusal_recipe_runs_as_printed_on_the_originals_tied_checkpoint(tmp_path, config):
    torch = pytest.importorskip("torch")
    from tests.original_files import write_best_model
    obj = "object" if config == "object" else argparse.Namespace(**CFG.to_dict())
    path = tmp_path / "best_model.pt"
    state_dict = write_best_model(path, CFG, config=obj)
    loaded = torch.load(path, weights_only=False)["model_state_dict"]  # the file really ties them
    assert loaded["lm_head.weight"].data_ptr() == loaded["tok_emb.weight"].data_ptr()
    with pytest.raises(WeightFileError) as err:
        read_weights(path)
    message = str(err.value)
    assert "\n" not in message and "refused" in message
    code, converted = recipe_from(message)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr
    back, cfg, _ = read_weights(converted)
    assert cfg == CFG and set(back) == set(state_dict)
    for key, value in state_dict.items():
        assert np.array_equal(back[key], value.numpy()), key
    params, _, _ = params_from_file(converted)
    assert np.array_equal(params["tok_emb"]["embedding"], state_dict["tok_emb.weight"].numpy())


def test_the_recipe_copies_the_config_json_beside_a_bare_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {key: torch.from_numpy(value) for key, value in random_state_dict(CFG).items()}
    sd["lm_head.weight"] = sd["tok_emb.weight"]  # tied, as in the original's model
    torch.save({**sd, "extra": argparse.Namespace(note="not a tensor")}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_dict()))
    with pytest.raises(WeightFileError) as err:
        read_weights(tmp_path / "pytorch_model.bin")
    code, converted = recipe_from(str(err.value))
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    back, cfg, _ = read_weights(converted)
    assert cfg == CFG and set(back) == set(random_state_dict(CFG))


def test_trust_pickle_loads_python_objects_only_when_asked_and_warns_on_stderr(tmp_path, capsys):
    pytest.importorskip("torch")
    from tests.original_files import write_best_model
    path = tmp_path / "best_model.pt"
    state_dict = write_best_model(path, CFG, config="object", step=700)
    with pytest.raises(WeightFileError, match="refused"):
        read_weights(path)
    assert capsys.readouterr().err == ""
    back, cfg, step = read_weights(path, trust_pickle=True)
    warning = capsys.readouterr().err.splitlines()
    assert cfg == CFG and step == 700 and np.array_equal(back["blocks.1.ffn.down.bias"].numpy(),
                                                         state_dict["blocks.1.ffn.down.bias"].numpy())
    assert len(warning) == 1 and warning[0].startswith(f"warning: {path} holds the Python object "), warning
    assert "weights_only=False" in warning[0] and "runs any code" in warning[0]


def test_trust_pickle_says_nothing_for_a_file_of_tensors(tmp_path, capsys):
    pytest.importorskip("torch")
    path = write_with_config(tmp_path, random_state_dict(CFG), "bin")
    read_weights(path, trust_pickle=True)
    assert capsys.readouterr().err == ""


def test_trust_pickle_names_a_class_that_does_not_import_here(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from tests.original_files import write_best_model
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "their_config.py").write_text("class TheirConfig:\n    pass\n")
    with monkeypatch.context() as m:  # the project that wrote the file, importable only while saving
        m.syspath_prepend(str(tmp_path / "elsewhere"))
        from their_config import TheirConfig
        write_best_model(tmp_path / "best_model.pt", CFG, config=TheirConfig())
    del sys.modules["their_config"]
    with pytest.raises(WeightFileError) as err:
        read_weights(tmp_path / "best_model.pt", trust_pickle=True)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'best_model.pt'}: --trust-pickle:") and "their_config" in message
    assert "PYTHONPATH" in message and "\n" not in message


# ----------------------------------------------------------------------------- half precision
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_pickles_import_upcast_to_float32_with_a_note(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    sd = random_state_dict(CFG)
    half = {key: torch.from_numpy(value).to(getattr(torch, dtype)) for key, value in sd.items()}
    torch.save(half, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_dict()))
    notes = []
    params, cfg, _ = params_from_file(tmp_path / "pytorch_model.bin", notes=notes)
    assert notes == [f"{tmp_path / 'pytorch_model.bin'}: weights are {dtype}: upcast to float32"]
    want = half["tok_emb.weight"].float().numpy()
    assert params["tok_emb"]["embedding"].dtype == np.float32
    assert np.array_equal(params["tok_emb"]["embedding"], want)  # exact: every half value is a float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_safetensors_written_by_torch_import_upcast_with_a_note(tmp_path, dtype):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    sd = random_state_dict(CFG)
    half = {key: torch.from_numpy(value).to(getattr(torch, dtype)) for key, value in sd.items()}
    half["norm.bias"] = half["norm.bias"].float()  # one tensor left in float32
    safetensors_torch.save_file(half, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CFG.to_dict()))
    notes = []
    back, _, _ = read_weights(tmp_path / "model.safetensors", notes=notes)
    assert notes == [f"{tmp_path / 'model.safetensors'}: {len(sd) - 1} of {len(sd)} tensors are {dtype}: "
                     f"upcast to float32"]
    for key, value in half.items():
        assert back[key].dtype == np.float32 and back[key].shape == tuple(value.shape), key
        assert np.array_equal(back[key], value.float().numpy()), key


def test_float32_files_bring_no_note(tmp_path):
    notes = []
    read_weights(write_with_config(tmp_path, random_state_dict(CFG), "safetensors"), notes=notes)
    assert notes == []


# ----------------------------------------------------------------------------- small truths
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_written_weight_files_honour_the_umask(tmp_path, fmt):
    if fmt == "bin":
        pytest.importorskip("torch")
    old = os.umask(0o027)
    try:
        path = write_weights(random_state_dict(CFG), tmp_path / f"weights.{fmt}", fmt)
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.parametrize("keep", [10, 1000, 0.5])
def test_a_truncated_pickles_message_cuts_the_libraries_text_only_between_words(tmp_path, keep):
    torch = pytest.importorskip("torch")
    path = write_with_config(tmp_path, random_state_dict(CFG), "bin")
    data = path.read_bytes()
    path.write_bytes(data[: keep if isinstance(keep, int) else int(len(data) * keep)])
    with pytest.raises(Exception) as theirs:
        torch.load(path, weights_only=True)
    full = str(theirs.value).strip().splitlines()[0]
    with pytest.raises(WeightFileError) as ours:
        read_weights(path)
    message = str(ours.value)
    prefix = f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a checkpoint?): " \
             f"{type(theirs.value).__name__}: "
    assert message.startswith(prefix) and "\n" not in message
    tail = message[len(prefix):]
    assert len(tail) <= 160
    if tail != full:
        kept = tail.removesuffix("...")
        assert full.startswith(kept) and full[len(kept)] == " ", (tail, full)  # a whole word or sentence
        assert tail.endswith("...") or kept[-1] in ".!?", tail


def test_gist_keeps_whole_sentences_and_cuts_a_long_one_at_a_word():
    first = "PytorchStreamReader failed reading zip archive: failed finding central directory."
    second = " This is an internal error."
    assert gist(ValueError(first + second + " " + "x " * 100)) == first + second
    assert gist(ValueError(first + " " + "y" * 100)) == first
    assert gist(ValueError("short one.\nsecond line")) == "short one."
    cut = gist(ValueError("word " * 60), limit=50)
    assert cut.endswith("...") and len(cut) <= 50 and cut.removesuffix("...").split(" ") == ["word"] * 9
