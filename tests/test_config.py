import pytest

from guppy_jax.core.config import ConfigError, ModelConfig, OptimConfig, PARITY_MODELS


def test_defaults_are_guppylm():
    cfg = ModelConfig()
    assert (cfg.vocab_size, cfg.max_seq_len, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden) == \
        (4096, 128, 384, 6, 6, 768)
    assert cfg.num_params() == 8_726_016
    assert cfg.head_dim == 64


@pytest.mark.parametrize("changes, words", [
    ({"d_model": 100, "n_heads": 6}, "divisible by n_heads"),
    ({"n_layers": 0}, "n_layers must be a positive integer"),
    ({"vocab_size": -5}, "vocab_size must be a positive integer"),
    ({"eos_id": 4096}, "eos_id must be a token id inside the vocab"),
    ({"pad_id": -1}, "pad_id must be a token id"),
    ({"dropout": 1.5}, "dropout must be in [0, 1)"),
])
def test_bad_configs_are_explained(changes, words):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**changes)
    assert words in str(err.value)


def test_from_dict_reads_both_key_styles():
    own = {"vocab_size": 256, "max_seq_len": 32, "d_model": 32, "n_layers": 2, "n_heads": 4,
           "ffn_hidden": 64, "dropout": 0.1, "pad_id": 0, "bos_id": 1, "eos_id": 2}
    hub = {"vocab_size": 256, "max_position_embeddings": 32, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 64, "hidden_dropout_prob": 0.1,
           "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "model_type": "guppy"}
    assert ModelConfig.from_dict(own) == ModelConfig.from_dict(hub) == PARITY_MODELS["micro"]
    assert ModelConfig.from_dict(PARITY_MODELS["micro"].to_dict()) == PARITY_MODELS["micro"]


def test_from_dict_refuses_contradictions():
    with pytest.raises(ConfigError, match="d_model twice"):
        ModelConfig.from_dict({"d_model": 384, "hidden_size": 256})


def test_optim_config_validation():
    assert OptimConfig().lr == 3e-4
    with pytest.raises(ConfigError, match="min_lr"):
        OptimConfig(lr=1e-4, min_lr=1e-3)


def test_every_config_has_replace():
    from guppy_jax.core.config import PRESETS
    oc = OptimConfig().replace(steps=20)
    assert oc.steps == 20 and oc.lr == OptimConfig().lr
    assert PRESETS["tiny"].replace(batch_size=4).model == PRESETS["tiny"].model
    with pytest.raises(ConfigError, match="min_lr"):
        OptimConfig().replace(min_lr=1.0)
