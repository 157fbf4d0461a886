"""Weight files: safetensors and PyTorch pickles read and written, configs flat or nested,
pickles holding Python objects refused without running them."""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from guppy_jax.config import PARITY_MODELS, ModelConfig
from guppy_jax.convert_weights import TIED_HEAD_KEY, key_map
from guppy_jax.weight_files import (WeightFileError, is_safetensors, model_config_from, params_from_file,
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
    assert "To convert a file you trust" in message and "safetensors" in message
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
