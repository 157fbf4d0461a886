"""PyTorch-layout state dicts <-> Flax params, with numpy only (no torch needed)."""
import jax
import numpy as np
import pytest

from guppy_jax.core.config import PARITY_MODELS
from guppy_jax.export.convert_weights import (TIED_HEAD_KEY, WeightsError, key_map, params_to_state_dict,
                                       state_dict_to_params)

from .helpers import random_params

CFG = PARITY_MODELS["micro"]


@pytest.fixture(scope="module")
def params():
    return jax.device_get(random_params(CFG, seed=0))


def test_every_key_and_shape(params):
    sd = params_to_state_dict(params, CFG)
    expected = {k for k, *_ in key_map(CFG)} | {TIED_HEAD_KEY}
    assert set(sd) == expected
    assert sum(v.size for k, v in sd.items() if k != TIED_HEAD_KEY) == CFG.num_params()
    assert sd["blocks.1.attn.qkv.weight"].shape == (3 * CFG.d_model, CFG.d_model)  # torch (out, in)
    np.testing.assert_array_equal(sd[TIED_HEAD_KEY], sd["tok_emb.weight"])


def test_round_trip_is_bit_exact(params):
    back = state_dict_to_params(params_to_state_dict(params, CFG), CFG)
    flat_a = jax.tree_util.tree_leaves_with_path(params)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(back))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        assert np.array_equal(np.asarray(leaf), flat_b[path]), jax.tree_util.keystr(path)


def test_converted_arrays_do_not_alias_the_source(params):
    sd = params_to_state_dict(params, CFG)
    converted = state_dict_to_params(sd, CFG)
    sd["norm.bias"] += 1.0  # an in-place update of the source, as an optimizer step would do
    assert not np.any(converted["norm"]["bias"] == sd["norm.bias"])


def test_missing_key_named(params):
    sd = params_to_state_dict(params, CFG)
    del sd["blocks.1.ffn.down.bias"]
    with pytest.raises(WeightsError, match=r"missing 1: blocks\.1\.ffn\.down\.bias"):
        state_dict_to_params(sd, CFG)


def test_extra_key_named(params):
    sd = params_to_state_dict(params, CFG)
    sd["blocks.7.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"]
    with pytest.raises(WeightsError, match=r"unexpected 1: blocks\.7\.attn\.qkv\.weight"):
        state_dict_to_params(sd, CFG)


def test_wrong_shape_names_key_and_both_shapes(params):
    sd = params_to_state_dict(params, CFG)
    sd["blocks.0.ffn.up.weight"] = np.zeros((5, CFG.d_model), np.float32)
    with pytest.raises(WeightsError) as err:
        state_dict_to_params(sd, CFG)
    msg = str(err.value)
    assert "blocks.0.ffn.up.weight" in msg and "(64, 32)" in msg and "(5, 32)" in msg


def test_wrong_config_is_refused(params):
    sd = params_to_state_dict(params, CFG)
    with pytest.raises(WeightsError, match="missing"):
        state_dict_to_params(sd, CFG.replace(n_layers=3))
    with pytest.raises(WeightsError, match=r"tok_emb\.weight: expected shape \(512, 32\)"):
        state_dict_to_params(sd, CFG.replace(vocab_size=512))


def test_untied_head_is_refused(params):
    sd = params_to_state_dict(params, CFG)
    sd[TIED_HEAD_KEY] = sd[TIED_HEAD_KEY] + 1.0
    with pytest.raises(WeightsError, match="ties them"):
        state_dict_to_params(sd, CFG)


def test_params_side_is_checked_too(params):
    bad = jax.tree_util.tree_map(lambda x: x, params)
    bad["blocks_0"]["attn"]["qkv"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsError, match=r"blocks_0/attn/qkv/kernel: expected shape"):
        params_to_state_dict(bad, CFG)
