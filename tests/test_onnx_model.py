"""The ONNX export against JAX: logits, the cached decode and greedy answers, float32 and int8."""
import jax.numpy as jnp
import numpy as np
import onnx
import pytest

from guppy_jax.export import onnx_model as ox
from guppy_jax import web
from guppy_jax.training.checkpoints import load_for_inference
from guppy_jax.core.generate import default_answer_len, generate
from guppy_jax.core.model import GuppyLM
from guppy_jax.core.tokenizer import encode, format_prompt

PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry?", "Do you like the CASTLE in your tank",
           "tell me about bubbles 🐟"]
FLOAT32_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    meta = ox.export_onnx(trained.run_dir, out)
    cfg, params, tok = load_for_inference(trained.run_dir)
    return out, meta, cfg, params, tok


def jax_logits(cfg, params, tokens_BT):
    return np.asarray(GuppyLM(cfg).apply({"params": params}, jnp.asarray(tokens_BT, jnp.int32)))


def max_diff(name, got, want, tolerance):
    diff = float(np.abs(np.asarray(got) - np.asarray(want)).max())
    assert diff <= tolerance, f"{name}: max |onnx - jax| = {diff:.3g} > {tolerance:g}"
    return diff


def jax_greedy(cfg, params, tok, prompt):
    """What `python -m guppy_jax.chat --temperature 0` generates, as token ids."""
    n = default_answer_len(cfg)
    ids = encode(tok, format_prompt(prompt))
    return ids, generate(cfg, params, [ids], temperature=0.0, max_new_tokens=n, prompt_len=cfg.max_seq_len - n)[0]


def test_the_files_are_self_contained_and_described(exported):
    out, meta, cfg, _, _ = exported
    for name in (ox.FLOAT_FILE, ox.INT8_FILE):
        model = onnx.load(str(out / name), load_external_data=False)
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == list(ox.INPUTS)
        assert [o.name for o in model.graph.output] == list(ox.OUTPUTS)
        assert meta["files"][name] == (out / name).stat().st_size
    assert sorted(p.name for p in out.iterdir()) == sorted(ox.EXPORT_FILES)
    assert meta["model"]["n_layers"] == cfg.n_layers and meta["head_dim"] == cfg.head_dim
    assert meta["files"][ox.INT8_FILE] < 0.6 * meta["files"][ox.FLOAT_FILE]


def test_the_float32_file_stores_the_tied_embedding_once(exported):
    out, _, cfg, _, _ = exported
    shapes = {(cfg.vocab_size, cfg.d_model), (cfg.d_model, cfg.vocab_size)}
    found = [t.name for t in onnx.load(str(out / ox.FLOAT_FILE)).graph.initializer if tuple(t.dims) in shapes]
    assert len(found) == 1, f"the embedding / head matrix is stored {len(found)} times: {found}"


def test_float32_logits_equal_jax_on_a_batch(exported):
    out, _, cfg, params, _ = exported
    tokens_BT = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, cfg.max_seq_len))
    got = ox.OnnxGuppy(out / ox.FLOAT_FILE, cfg).logits(tokens_BT)
    assert got.shape == (3, cfg.max_seq_len, cfg.vocab_size)
    max_diff("logits (3 rows, full context)", got, jax_logits(cfg, params, tokens_BT), FLOAT32_TOLERANCE)


def test_prefill_then_one_position_per_token_equals_the_full_forward(exported):
    """The cache path: a prefill of 5 positions, then single tokens, against one full pass."""
    out, _, cfg, params, _ = exported
    tokens_BT = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 12))
    want = jax_logits(cfg, params, tokens_BT)
    runner = ox.OnnxGuppy(out / ox.FLOAT_FILE, cfg)
    past = ox.empty_cache(cfg, 2)
    logits, past_k, past_v = runner.step(tokens_BT[:, :5], past, past)
    max_diff("prefill logits (positions 0-4)", logits, want[:, :5], FLOAT32_TOLERANCE)
    for t in range(5, 12):
        logits, past_k, past_v = runner.step(tokens_BT[:, t:t + 1], past_k, past_v)
        assert past_k.shape == past_v.shape == (cfg.n_layers, 2, cfg.n_heads, t + 1, cfg.head_dim)
        max_diff(f"decode logits at position {t}", logits[:, 0], want[:, t], FLOAT32_TOLERANCE)


@pytest.mark.parametrize("path", ["cached", "prefill"])
def test_float32_greedy_answers_equal_jax(exported, path):
    out, _, cfg, params, tok = exported
    runner = ox.OnnxGuppy(out / ox.FLOAT_FILE, cfg)
    for prompt in PROMPTS:
        ids, want = jax_greedy(cfg, params, tok, prompt)
        got = getattr(runner, f"greedy_{path}")(ids, default_answer_len(cfg))
        assert got == want, f"{prompt!r}: onnx ({path}) {got} != jax {want}"


def test_int8_stays_close_to_jax(exported, capsys):
    """Measured, not held to float32's bar: greedy agreement and the logits' distance."""
    out, _, cfg, params, tok = exported
    runner = ox.OnnxGuppy(out / ox.INT8_FILE, cfg)
    tokens_BT = np.random.default_rng(0).integers(0, cfg.vocab_size, (3, cfg.max_seq_len))
    want = jax_logits(cfg, params, tokens_BT)
    got = runner.logits(tokens_BT)
    diff = max_diff("int8 logits", got, want, 0.25 * float(np.abs(want).max()))
    argmax_agree = float((got.argmax(-1) == want.argmax(-1)).mean())
    same = sum(runner.greedy_cached(ids, default_answer_len(cfg)) == answer
               for ids, answer in (jax_greedy(cfg, params, tok, p) for p in PROMPTS))
    with capsys.disabled():
        print(f"\nint8: logits max |diff| {diff:.3g} (max |logit| {np.abs(want).max():.3g}), "
              f"argmax agreement {argmax_agree:.1%}, greedy answers identical {same}/{len(PROMPTS)}")
    assert argmax_agree > 0.5, f"int8 argmax agrees with jax on only {argmax_agree:.1%} of positions"


def test_export_refuses_a_run_directory_and_earlier_files(exported, trained):
    out = exported[0]
    with pytest.raises(ox.OnnxExportError, match="run directory"):
        ox.check_target(trained.run_dir, trained.run_dir, force=True)
    with pytest.raises(ox.OnnxExportError, match="--force"):
        ox.check_target(trained.run_dir, out, force=False)
    ox.check_target(trained.run_dir, out, force=True)


def test_the_export_command(trained, tmp_path, capsys):
    assert web.main(["export", "--run-dir", str(trained.run_dir), "--out", str(tmp_path / "x"), "--no-int8"]) == 0
    printed = capsys.readouterr().out
    assert "guppy.onnx: " in printed and "guppy.int8.onnx" not in printed
    assert not (tmp_path / "x" / ox.INT8_FILE).exists()
    assert web.main(["export", "--run-dir", str(trained.run_dir), "--out", str(tmp_path / "x")]) == 1
    assert "--force" in capsys.readouterr().err
    assert web.main(["export", "--run-dir", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 1
