"""The convert command: original checkpoints in, reference-loadable files out."""
import json

import numpy as np
import pytest

from guppy_jax import convert

torch = pytest.importorskip("torch")


def test_export_then_reference_gives_same_greedy_answer(trained, tmp_path):
    from guppy_jax.checkpoint import load_for_inference
    from guppy_jax.config import ModelConfig
    from guppy_jax.generate import generate as jax_generate
    from reference_torch.model import GuppyLM, generate as torch_generate
    out = trained.run_dir
    assert convert.main(["export", str(out), "--out", str(tmp_path / "exp")]) == 0
    cfg = ModelConfig.from_dict(json.loads((tmp_path / "exp" / "config.json").read_text()))
    model = GuppyLM(cfg)
    model.load_state_dict(torch.load(tmp_path / "exp" / "pytorch_model.bin", weights_only=True), strict=True)
    jcfg, params, tok = load_for_inference(out)
    prompt = tok.encode("<|im_start|>user\nhi guppy<|im_end|>\n<|im_start|>assistant\n").ids
    want = torch_generate(model, prompt, 20, temperature=0.0)
    got = jax_generate(jcfg, params, [prompt], max_new_tokens=20, temperature=0.0)[0]
    assert got == want


def test_import_both_formats_round_trip(trained, tmp_path):
    from guppy_jax.checkpoint import load_for_inference
    out = trained.run_dir
    convert.main(["export", str(out), "--out", str(tmp_path / "exp")])
    cfg, params, _ = load_for_inference(out)
    # bare state dict + config.json in hub key style
    hub = {"vocab_size": cfg.vocab_size, "max_position_embeddings": cfg.max_seq_len, "hidden_size": cfg.d_model,
           "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
           "intermediate_size": cfg.ffn_hidden}
    (tmp_path / "exp" / "config.json").write_text(json.dumps(hub))
    assert convert.main(["import", str(tmp_path / "exp" / "pytorch_model.bin"), "--out", str(tmp_path / "a")]) == 0
    # best_model.pt-style dict
    sd = torch.load(tmp_path / "exp" / "pytorch_model.bin", weights_only=True)
    torch.save({"step": 30, "model_state_dict": sd, "config": cfg.to_dict()}, tmp_path / "exp" / "best_model.pt")
    assert convert.main(["import", str(tmp_path / "exp" / "best_model.pt"), "--out", str(tmp_path / "b")]) == 0
    for d in ("a", "b"):
        _, p2, _ = load_for_inference(tmp_path / d)
        assert np.array_equal(np.asarray(p2["blocks_1"]["ffn"]["up"]["kernel"]),
                              np.asarray(params["blocks_1"]["ffn"]["up"]["kernel"]))


def test_bad_checkpoints_are_explained(trained, tmp_path, capsys):
    out = trained.run_dir
    convert.main(["export", str(out), "--out", str(tmp_path / "exp")])
    good = (tmp_path / "exp" / "pytorch_model.bin").read_bytes()
    (tmp_path / "exp" / "cut.bin").write_bytes(good[: len(good) // 2])
    assert convert.main(["import", str(tmp_path / "exp" / "cut.bin"), "--out", str(tmp_path / "x")]) == 1
    assert "cannot be read as a PyTorch checkpoint" in capsys.readouterr().err
    sd = torch.load(tmp_path / "exp" / "pytorch_model.bin", weights_only=True)
    sd["blocks.0.attn.qkv.weightt"] = sd.pop("blocks.0.attn.qkv.weight")
    torch.save(sd, tmp_path / "exp" / "renamed.bin")
    assert convert.main(["import", str(tmp_path / "exp" / "renamed.bin"), "--out", str(tmp_path / "y")]) == 1
    err = capsys.readouterr().err
    assert "missing 1: blocks.0.attn.qkv.weight" in err and "unexpected 1: blocks.0.attn.qkv.weightt" in err
    cfg = json.loads((tmp_path / "exp" / "config.json").read_text())
    (tmp_path / "exp" / "config.json").write_text(json.dumps({**cfg, "hidden_size": 48, "d_model": 48}))
    assert convert.main(["import", str(tmp_path / "exp" / "pytorch_model.bin"), "--out", str(tmp_path / "z")]) == 1
    assert "tok_emb.weight: expected shape" in capsys.readouterr().err


