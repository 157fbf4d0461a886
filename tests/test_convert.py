"""The convert command: original checkpoints and safetensors in, reference-loadable files out."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from guppy_jax import convert

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def same_params(a, b) -> None:
    flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
    for path, leaf in jax.tree_util.tree_leaves_with_path(a):
        assert np.array_equal(np.asarray(leaf), np.asarray(flat_b[path])), jax.tree_util.keystr(path)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_export_then_reference_gives_same_greedy_answer(trained, tmp_path, fmt):
    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.config import ModelConfig
    from guppy_jax.core.generate import generate as jax_generate
    from reference_torch.model import GuppyLM, generate as torch_generate
    out = trained.run_dir
    flags = [] if fmt == "safetensors" else ["--format", "bin"]  # safetensors is the default
    assert convert.main(["export", str(out), "--out", str(tmp_path / "exp"), *flags]) == 0
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted(
        ["config.json", "tokenizer.json", "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"])
    cfg = ModelConfig.from_dict(json.loads((tmp_path / "exp" / "config.json").read_text()))
    model = GuppyLM(cfg)
    if fmt == "safetensors":
        state_dict = safetensors_torch.load_file(str(tmp_path / "exp" / "model.safetensors"))
    else:
        state_dict = torch.load(tmp_path / "exp" / "pytorch_model.bin", weights_only=True)
    model.load_state_dict(state_dict, strict=True)
    jcfg, params, tok = load_for_inference(out)
    prompt = tok.encode("<|im_start|>user\nhi guppy<|im_end|>\n<|im_start|>assistant\n").ids
    want = torch_generate(model, prompt, 20, temperature=0.0)
    got = jax_generate(jcfg, params, [prompt], max_new_tokens=20, temperature=0.0)[0]
    assert got == want


def test_safetensors_round_trips_are_bit_exact_both_ways(trained, tmp_path):
    from guppy_jax.training.checkpoints import load_for_inference
    assert convert.main(["export", str(trained.run_dir), "--out", str(tmp_path / "e1")]) == 0
    assert convert.main(["import", str(tmp_path / "e1" / "model.safetensors"), "--run-dir", str(tmp_path / "r")]) == 0
    _, original, _ = load_for_inference(trained.run_dir)
    _, imported, _ = load_for_inference(tmp_path / "r")
    same_params(original, imported)  # run -> file -> run
    assert convert.main(["export", str(tmp_path / "r"), "--out", str(tmp_path / "e2")]) == 0
    first = safetensors_torch.load_file(str(tmp_path / "e1" / "model.safetensors"))
    second = safetensors_torch.load_file(str(tmp_path / "e2" / "model.safetensors"))
    assert set(first) == set(second)
    for key in first:  # file -> run -> file
        assert torch.equal(first[key], second[key]), key


def test_bad_safetensors_files_are_one_line_naming_the_file(trained, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert convert.main(["export", str(trained.run_dir), "--out", str(exp)]) == 0
    weights = safetensors_torch.load_file(str(exp / "model.safetensors"))
    weights["blocks.1.attn.out.weight"] = weights["blocks.1.attn.out.weight"][:-1].clone()
    safetensors_torch.save_file(weights, str(exp / "bent.safetensors"))
    cut = exp / "cut.safetensors"
    cut.write_bytes((exp / "model.safetensors").read_bytes()[:-100])
    capsys.readouterr()
    for bad, says in ((exp / "bent.safetensors", "blocks.1.attn.out.weight: expected shape"),
                      (cut, "cannot be read as safetensors")):
        assert convert.main(["import", str(bad), "--run-dir", str(tmp_path / bad.stem)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {bad}: ") and says in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / bad.stem).exists()


def test_a_malicious_pickle_is_refused_with_our_message(tmp_path, capsys):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"tok_emb.weight": torch.zeros(2), "x": Payload()}, tmp_path / "pytorch_model.bin")
    assert convert.main(["import", str(tmp_path / "pytorch_model.bin"), "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "the pickle's payload ran"
    assert "refused" in err and "guppy-jax loads weights only" in err and "io.open" in err, err
    assert "Weights only load failed" not in err and len(err.splitlines()) == 1


def test_import_both_formats_round_trip(trained, tmp_path):
    from guppy_jax.training.checkpoints import load_for_inference
    out = trained.run_dir
    convert.main(["export", str(out), "--out", str(tmp_path / "exp"), "--format", "bin"])
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
    convert.main(["export", str(out), "--out", str(tmp_path / "exp"), "--format", "bin"])
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




def test_a_bare_state_dict_beside_the_originals_nested_training_config(trained, tmp_path):
    from guppy_jax.training.checkpoints import load_for_inference
    exp = tmp_path / "exp"
    assert convert.main(["export", str(trained.run_dir), "--out", str(exp), "--format", "bin"]) == 0
    cfg, params, _ = load_for_inference(trained.run_dir)
    nested = {"model": cfg.to_dict(), "train": {"batch_size": 32, "learning_rate": 3e-4, "max_steps": 10000}}
    (exp / "config.json").write_text(json.dumps(nested))
    assert convert.main(["import", str(exp / "pytorch_model.bin"), "--run-dir", str(tmp_path / "r")]) == 0
    imported_cfg, imported, _ = load_for_inference(tmp_path / "r")
    assert imported_cfg == cfg
    same_params(params, imported)


def test_convert_export_can_write_onnx_too(trained, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import numpy as np

    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.model import GuppyLM
    from guppy_jax.export.onnx_model import FLOAT_FILE, INT8_FILE, OnnxGuppy
    out = tmp_path / "onnx"
    assert convert.main(["export", "--run-dir", str(trained.run_dir), "--out", str(out), "--format", "onnx"]) == 0
    assert "guppy.onnx" in capsys.readouterr().out
    assert (out / FLOAT_FILE).exists() and (out / INT8_FILE).exists()
    cfg, params, _ = load_for_inference(trained.run_dir)
    tokens = np.arange(3, 3 + 10, dtype=np.int64)[None]
    want = np.asarray(GuppyLM(cfg).apply({"params": params}, tokens.astype(np.int32)))
    got = OnnxGuppy(out / FLOAT_FILE, cfg).logits(tokens)
    assert float(np.abs(got - want).max()) <= 1e-5


# ----------------------------------------------------------------------------- the original's files
def run_module(*args, cwd=None):
    from guppy_jax.cli import REPO
    env = {**os.environ, "GUPPY_COMPILE_CACHE": "off", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=600)


def test_the_originals_best_model_pt_imports_from_the_command_line_and_chat_answers_like_it(data_dir, tmp_path):
    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.config import PRESETS
    from guppy_jax.export.convert_weights import params_to_state_dict, to_torch
    from guppy_jax.core.tokenizer import decode, encode, format_prompt, load_tokenizer
    from reference_torch.model import generate as torch_generate
    from tests.original_files import original_model, write_best_model
    cfg = PRESETS["tiny"].model  # its vocab is the data_dir tokenizer's
    state_dict = write_best_model(tmp_path / "best_model.pt", cfg, step=1200, eval_loss=1.25, seed=3)
    assert state_dict["lm_head.weight"].data_ptr() == state_dict["tok_emb.weight"].data_ptr()
    run = tmp_path / "run"
    done = run_module("guppy_jax.convert", "import", tmp_path / "best_model.pt", "--run-dir", run,
                      "--tokenizer", data_dir / "tokenizer.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"imported {tmp_path / 'best_model.pt'} into {run}") and done.stderr == ""
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["1200"]  # the original's step kept
    got_cfg, params, _ = load_for_inference(run)
    assert got_cfg == cfg
    for key, value in to_torch(params_to_state_dict(jax.device_get(params), cfg)).items():
        assert torch.equal(value, state_dict[key]), key
    chat = run_module("guppy_jax.chat", "--run-dir", run, "--prompt", "hi guppy", "--temperature", "0",
                      "--max-new-tokens", "12")
    assert chat.returncode == 0, chat.stderr
    tok = load_tokenizer(data_dir / "tokenizer.json")
    want = torch_generate(original_model(cfg, seed=3), encode(tok, format_prompt("hi guppy")), 12, temperature=0.0)
    assert chat.stdout.strip() == f"Guppy> {decode(tok, want).strip()}"


def test_trust_pickle_imports_a_best_model_pt_holding_a_config_object_only_when_passed(data_dir, tmp_path, capsys):
    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.config import PRESETS
    from tests.original_files import write_best_model
    cfg = PRESETS["tiny"].model
    path = tmp_path / "best_model.pt"
    state_dict = write_best_model(path, cfg, config="object")
    args = ["import", str(path), "--run-dir", str(tmp_path / "run"), "--tokenizer", str(data_dir / "tokenizer.json")]
    assert convert.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: refused: it holds the Python object tests.original_files.")
    assert "warning" not in err and len(err.splitlines()) == 1 and not (tmp_path / "run").exists()
    assert convert.main([*args, "--trust-pickle"]) == 0
    captured = capsys.readouterr()
    assert "imported" in captured.out
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path} holds the Python object "), warnings
    assert "--trust-pickle" in warnings[0] and "runs any code the file names" in warnings[0]
    got_cfg, params, _ = load_for_inference(tmp_path / "run")
    assert got_cfg == cfg
    assert np.array_equal(np.asarray(params["tok_emb"]["embedding"]), state_dict["tok_emb.weight"].numpy())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_half_precision_pytorch_model_bin_imports_with_one_note(data_dir, tmp_path, capsys, dtype):
    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.config import PRESETS
    from tests.original_files import original_model
    cfg = PRESETS["tiny"].model
    state_dict = {key: value.to(getattr(torch, dtype)) for key, value in original_model(cfg).state_dict().items()}
    torch.save(state_dict, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    args = ["import", str(tmp_path / "pytorch_model.bin"), "--tokenizer", str(data_dir / "tokenizer.json")]
    assert convert.main([*args, "--run-dir", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().err.strip() == (f"note: {tmp_path / 'pytorch_model.bin'}: weights are {dtype}: "
                                               f"upcast to float32")
    _, params, _ = load_for_inference(tmp_path / "run")
    assert params["pos_emb"]["embedding"].dtype == np.float32
    assert np.array_equal(np.asarray(params["pos_emb"]["embedding"]), state_dict["pos_emb.weight"].float().numpy())
    assert convert.main([*args, "--run-dir", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_bfloat16_safetensors_file_imports_with_a_note(data_dir, tmp_path, capsys):
    from guppy_jax.training.checkpoints import load_for_inference
    from guppy_jax.core.config import PRESETS
    from tests.original_files import original_model
    cfg = PRESETS["tiny"].model
    state_dict = {key: value.to(torch.bfloat16).clone() for key, value in original_model(cfg).state_dict().items()}
    safetensors_torch.save_file(state_dict, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    assert convert.main(["import", str(tmp_path / "model.safetensors"), "--run-dir", str(tmp_path / "run"),
                         "--tokenizer", str(data_dir / "tokenizer.json")]) == 0
    assert "weights are bfloat16: upcast to float32" in capsys.readouterr().err
    _, params, _ = load_for_inference(tmp_path / "run")
    assert np.array_equal(np.asarray(params["blocks_0"]["attn"]["qkv"]["bias"]),
                          state_dict["blocks.0.attn.qkv.bias"].float().numpy())


def test_a_missing_tokenizer_says_where_the_original_keeps_its_own(tmp_path, capsys):
    from guppy_jax.core.config import PRESETS
    from tests.original_files import write_best_model
    write_best_model(tmp_path / "best_model.pt", PRESETS["tiny"].model)
    assert convert.main(["import", str(tmp_path / "best_model.pt"), "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'tokenizer.json'}: not found") and len(err.splitlines()) == 1
    assert "pass --tokenizer" in err and "data/tokenizer.json" in err and not (tmp_path / "run").exists()


def test_exported_files_honour_the_umask(trained, tmp_path):
    old = os.umask(0o027)
    try:
        assert convert.main(["export", str(trained.run_dir), "--out", str(tmp_path / "exp")]) == 0
    finally:
        os.umask(old)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "exp").iterdir()}
    assert modes == {"model.safetensors": oct(0o640), "config.json": oct(0o640), "tokenizer.json": oct(0o640)}
