"""The train command: flags, presets, --help, and Ctrl-C in a real process."""
import os
import signal
import subprocess
import sys
import time

from guppy_jax.cli import REPO
from guppy_jax.core.config import PRESETS
from guppy_jax.train import build_parser, resolve_config


def test_cli_flags_override_the_preset():
    args = build_parser().parse_args(["--preset", "tiny", "--steps", "7", "--lr", "0.01", "--no-packing",
                                      "--batch-size", "4", "--d-model", "64"])
    preset, cfg, note = resolve_config(args, "cpu")
    assert preset == "tiny" and note == ""
    assert (cfg.optim.steps, cfg.optim.lr, cfg.packing, cfg.batch_size, cfg.model.d_model) == (7, 0.01, False, 4, 64)
    _, auto, note = resolve_config(build_parser().parse_args([]), "cpu")
    assert auto == PRESETS["cpu"] and "--preset guppy-9m" in note
    assert resolve_config(build_parser().parse_args([]), "gpu")[0] == "guppy-9m"


def test_help_documents_every_flag():
    text = build_parser().format_help()
    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "guppy_jax.train", "--preset", "tiny", "--steps", "100000", "--eval-every",
           "100000", "--checkpoint-every", "100000", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 200):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted: saved step" in output
    saved = [int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert len(saved) == 1 and saved[0] > 0


def summary_of(run_dir):
    import json
    return json.loads((run_dir / "summary.json").read_text())


def test_prepare_3000_samples_then_tiny_trains_with_no_extra_flags(tmp_path, capsys):
    from guppy_jax import prepare, train
    data, run = tmp_path / "data", tmp_path / "run"
    assert prepare.main(["--samples", "3000", "--out", str(data), "--quiet"]) == 0
    assert train.main(["--preset", "tiny", "--data-dir", str(data), "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    # the tokenizer learned more ids than tiny's 2048: the model's vocab grew to fit, and says so
    assert "rounded up to a multiple of 64" in out, out
    assert summary_of(run)["status"] == "finished"


def test_prepare_defaults_then_train_defaults_agree_by_themselves(tmp_path):
    from guppy_jax import prepare, train
    from guppy_jax.core.tokenizer import load_tokenizer
    data, run = tmp_path / "data", tmp_path / "run"
    assert prepare.main(["--out", str(data), "--quiet"]) == 0   # 60,000 samples, a 4,096-id tokenizer
    # on this CPU the default preset is `cpu` (vocab 2048); --steps only keeps the test short
    assert train.main(["--data-dir", str(data), "--run-dir", str(run), "--steps", "4", "--quiet"]) == 0
    import json
    vocab = json.loads((run / "config.json").read_text())["train"]["model"]["vocab_size"]
    assert vocab >= load_tokenizer(data / "tokenizer.json").get_vocab_size() and vocab % 64 == 0
    assert summary_of(run)["step"] == 4


def test_a_vocab_the_user_set_too_small_is_still_refused(tmp_path, data_dir, capsys):
    from guppy_jax import train
    code = train.main(["--preset", "tiny", "--vocab-size", "512", "--data-dir", str(data_dir),
                       "--run-dir", str(tmp_path / "run")])
    assert code == 1 and "but the model's vocab_size is 512" in capsys.readouterr().err


def test_steps_5_trains_exactly_5_steps_with_4_per_call(tmp_path, data_dir, capsys):
    from guppy_jax import train
    run = tmp_path / "run"
    assert train.main(["--preset", "tiny", "--steps-per-call", "4", "--steps", "5", "--data-dir", str(data_dir),
                       "--run-dir", str(run)]) == 0
    assert summary_of(run)["step"] == 5
    assert "compiled train step 2x (calls of 1 and 4 steps)" in capsys.readouterr().out


def write_original_best_model(params, cfg, path, step: int = 30) -> None:
    """best_model.pt as the original saves it: {"step", "model_state_dict" (the reference
    model's own state dict, lm_head tied to tok_emb), "config", "eval_loss"}."""
    import torch

    from guppy_jax.export.convert_weights import torch_model_from_params
    model = torch_model_from_params(params, cfg)
    assert model.lm_head.weight.data_ptr() == model.tok_emb.weight.data_ptr()  # tied, as in the original
    torch.save({"step": step, "model_state_dict": model.state_dict(), "config": cfg.to_dict(),
                "eval_loss": 1.0}, path)


def test_the_originals_best_model_imports_and_fine_tunes_with_one_command(tmp_path, trained):
    import json

    from guppy_jax import convert, train
    from guppy_jax.training.checkpoints import load_for_inference
    cfg, params, _ = load_for_inference(trained.run_dir)
    original = tmp_path / "original"
    original.mkdir()
    write_original_best_model(params, cfg, original / "best_model.pt")
    imported, tuned, fresh = tmp_path / "imported", tmp_path / "tuned", tmp_path / "fresh"
    assert convert.main(["import", str(original / "best_model.pt"), "--run-dir", str(imported),
                         "--tokenizer", str(trained.data_dir / "tokenizer.json")]) == 0
    # the documented command: no model flag repeated, a fresh schedule of 8 steps
    assert train.main(["--init-from", str(imported), "--run-dir", str(tuned), "--data-dir",
                       str(trained.data_dir), "--steps", "8", "--quiet"]) == 0
    saved = json.loads((tuned / "config.json").read_text())
    assert saved["init_from"] == str(imported) and saved["train"]["model"] == cfg.to_dict()
    assert saved["train"]["optim"]["steps"] == 8 and summary_of(tuned)["step"] == 8
    # it really starts from the imported weights: its first loss is far below a fresh model's
    assert train.main(["--preset", "tiny", "--run-dir", str(fresh), "--data-dir", str(trained.data_dir),
                       "--steps", "8", "--quiet"]) == 0

    def first_loss(run_dir):
        return next(json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines())
    assert first_loss(tuned) < first_loss(fresh) - 1.0, (first_loss(tuned), first_loss(fresh))
    # and it resumes on its own config and tokenizer
    assert train.main(["--resume", "--run-dir", str(tuned), "--data-dir", str(trained.data_dir),
                       "--steps", "8", "--quiet"]) == 0


def test_an_imported_run_resumes_on_its_own_config_without_flags(tmp_path, trained):
    from guppy_jax import convert, train
    from guppy_jax.training.checkpoints import load_for_inference
    cfg, params, _ = load_for_inference(trained.run_dir)
    write_original_best_model(params, cfg, tmp_path / "best_model.pt", step=30)
    run = tmp_path / "imported"
    assert convert.main(["import", str(tmp_path / "best_model.pt"), "--run-dir", str(run),
                         "--tokenizer", str(trained.data_dir / "tokenizer.json")]) == 0
    # imported runs store dtype "auto": resuming picks this device's, with no refusal
    assert train.main(["--resume", "--run-dir", str(run), "--data-dir", str(trained.data_dir),
                       "--stop-after", "3", "--quiet"]) == 0
    assert summary_of(run)["step"] == 33
