"""Checkpoint files cross the framework boundary: torch.save -> guppy_jax, and back."""
import jax
import numpy as np
import torch

from guppy_jax.core.config import PARITY_MODELS
from guppy_jax.export.convert_weights import params_to_state_dict, state_dict_to_params, to_torch
from guppy_jax.core.model import GuppyLM, init_params
from reference_torch.model import GuppyLM as TorchGuppyLM

CFG = PARITY_MODELS["micro"]


def test_reference_checkpoint_loads_into_jax(tmp_path):
    torch.manual_seed(1)
    model = TorchGuppyLM(CFG).eval()
    path = tmp_path / "best_model.pt"
    torch.save({"step": 7, "model_state_dict": model.state_dict(), "config": CFG.to_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    params = state_dict_to_params(ckpt["model_state_dict"], CFG)
    tokens = np.arange(3, 3 + 2 * CFG.max_seq_len).reshape(2, -1) % CFG.vocab_size
    with torch.no_grad():
        want = model(torch.from_numpy(tokens)).numpy()
    got = np.asarray(GuppyLM(CFG).apply({"params": params}, tokens.astype(np.int32)))
    assert np.abs(got - want).max() <= 1e-5, np.abs(got - want).max()


def test_jax_params_load_into_reference_strict(tmp_path):
    params = jax.device_get(init_params(CFG, jax.random.key(3)))
    path = tmp_path / "pytorch_model.bin"
    torch.save(to_torch(params_to_state_dict(params, CFG)), path)
    model = TorchGuppyLM(CFG)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    assert model.lm_head.weight is model.tok_emb.weight  # still tied after loading
    np.testing.assert_array_equal(model.blocks[1].attn.qkv.weight.detach().numpy(),
                                  np.asarray(params["blocks_1"]["attn"]["qkv"]["kernel"]).T)
