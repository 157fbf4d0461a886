"""chat, eval and convert on a tiny trained run."""
import json
import tomllib

import numpy as np
import pytest

from guppy_jax import chat, convert, eval as guppy_eval
from guppy_jax.config import PRESETS
from guppy_jax.persona import generate, load_persona
from guppy_jax.prepare import DEFAULT_PERSONA, prepare
from guppy_jax.train import train

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    prepare(out=data, samples=1500, seed=0, vocab_size=PRESETS["tiny"].model.vocab_size, quiet=True)
    out = tmp_path_factory.mktemp("run")
    train(PRESETS["tiny"], out, data, quiet=True, show_samples=False)
    return out, data


def test_chat_single_shot(run_dir, capsys):
    assert chat.main(["--checkpoint", str(run_dir[0]), "--prompt", "hi guppy", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Guppy> ") and len(out.strip()) > len("Guppy>")


def test_chat_long_prompt_is_cut_with_notice(run_dir, capsys):
    assert chat.main(["--checkpoint", str(run_dir[0]), "--prompt", "blub " * 200]) == 0
    captured = capsys.readouterr()
    assert "only its last" in captured.err and captured.out.startswith("Guppy> ")


def test_chat_interactive(run_dir, capsys, monkeypatch):
    lines = iter(["hello", "are you hungry", "quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert chat.main(["--checkpoint", str(run_dir[0])]) == 0
    assert capsys.readouterr().out.count("Guppy> ") == 2


def test_chat_without_checkpoint_explains(tmp_path, capsys):
    assert chat.main(["--checkpoint", str(tmp_path / "none")]) == 1
    assert "python -m guppy_jax.train" in capsys.readouterr().err


def test_eval_prompts_are_held_out():
    cases, _ = guppy_eval.load_cases(guppy_eval.DEFAULT_CASES)
    assert len(cases) >= 30 and len({c.topic for c in cases}) >= 30
    seen = {r["input"] for r in generate(load_persona(DEFAULT_PERSONA), 60_000, seed=42)}
    assert not [c.prompt for c in cases if c.prompt in seen]


def test_eval_prints_its_table(run_dir, capsys, tmp_path):
    out, data = run_dir
    assert guppy_eval.main(["--checkpoint", str(out), "--data-dir", str(data), "--json",
                            str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    for label in ("keyword hit rate", "lowercase answers", "short answers", "eval loss"):
        assert label in text
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["cases"] >= 30 and 0 <= result["keyword_hit_rate"] <= 1
    assert np.isclose(result["perplexity"], np.exp(result["eval_loss"]))


def test_export_then_reference_gives_same_greedy_answer(run_dir, tmp_path):
    from guppy_jax.checkpoint import load_for_inference
    from guppy_jax.config import ModelConfig
    from guppy_jax.generate import generate as jax_generate
    from reference_torch.model import GuppyLM, generate as torch_generate
    out, _ = run_dir
    assert convert.main(["export", str(out), "--out", str(tmp_path / "exp")]) == 0
    cfg = ModelConfig.from_dict(json.loads((tmp_path / "exp" / "config.json").read_text()))
    model = GuppyLM(cfg)
    model.load_state_dict(torch.load(tmp_path / "exp" / "pytorch_model.bin", weights_only=True), strict=True)
    jcfg, params, tok = load_for_inference(out)
    prompt = tok.encode("<|im_start|>user\nhi guppy<|im_end|>\n<|im_start|>assistant\n").ids
    want = torch_generate(model, prompt, 20, temperature=0.0)
    got = jax_generate(jcfg, params, [prompt], max_new_tokens=20, temperature=0.0)[0]
    assert got == want


def test_import_both_formats_round_trip(run_dir, tmp_path):
    from guppy_jax.checkpoint import load_for_inference
    out, _ = run_dir
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


def test_bad_checkpoints_are_explained(run_dir, tmp_path, capsys):
    out, _ = run_dir
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


def test_keywords_match_at_word_starts():
    case = guppy_eval.Case("greetings", "hey", ("hi", "bubble"))
    assert guppy_eval.score_answer("hi there", case, 30)["hit"]
    assert guppy_eval.score_answer("i chase bubbles.", case, 30)["hit"]
    assert not guppy_eval.score_answer("this is a thing", case, 30)["hit"]
    assert not guppy_eval.score_answer("Hello There", case, 30)["lowercase"]
    assert not guppy_eval.score_answer("word " * 31, case, 30)["short"]
