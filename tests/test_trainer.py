"""The training loop end to end on the tiny preset and a small generated dataset."""
import json

import jax.numpy as jnp
import pytest

import guppy_jax.core.steps as steps
from guppy_jax.core.config import PRESETS

from .helpers import losses
from guppy_jax.training.loop import TrainError, TrainOptions, train
from guppy_jax.training.report import Reporter

TINY = PRESETS["tiny"]


def run(cfg, out, data_dir, **kw):
    options = TrainOptions(out=out, data_dir=data_dir, preset="tiny", show_samples=False, **kw)
    return train(cfg, options, Reporter(quiet=True))


@pytest.mark.parametrize("packing", [True, False])
def test_tiny_run_learns_and_compiles_once(tmp_path, data_dir, packing):
    summary = run(TINY.replace(packing=packing), tmp_path / "run", data_dir)
    got = losses(tmp_path / "run")
    assert summary["status"] == "finished" and summary["step"] == TINY.optim.steps
    assert sorted(got) == list(range(1, TINY.optim.steps + 1))
    first, last = sum(list(got.values())[:3]) / 3, sum(list(got.values())[-3:]) / 3
    assert last < first - 0.5, (first, last)
    # whatever the sample lengths, one fixed batch shape: one compilation of each step
    assert summary["compiles"] == {"train_step": 1, "eval_step": 1}
    for name in ("config.json", "tokenizer.json", "loss_curve.png", "summary.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["20", "30"]
    assert len(list((tmp_path / "run" / "best").iterdir())) == 1


@pytest.mark.parametrize("k", [1, 2, 4])
def test_resume_is_bit_exact(tmp_path, data_dir, k):
    cfg = TINY.replace(optim=TINY.optim.replace(steps=20), checkpoint_every=4,
                       steps_per_call=k)
    whole_summary = run(cfg, tmp_path / "whole", data_dir)
    # k=4 ends a call early at the eval at step 10: calls of 4 and 2, one compile each
    assert whole_summary["compiles"] == {"train_step": len(whole_summary["call_lengths"]), "eval_step": 1}
    first = run(cfg, tmp_path / "split", data_dir, stop_after=6)  # 6: not a multiple of k=4
    assert first["status"] == "finished" and first["step"] == 6
    run(cfg, tmp_path / "split", data_dir, resume=True)
    whole, split = losses(tmp_path / "whole"), losses(tmp_path / "split")
    assert sorted(split) == list(range(1, 21))
    assert whole == split  # float equality: the same bits, step for step


def test_several_steps_per_call_train_the_same(tmp_path, data_dir):
    one = run(TINY, tmp_path / "one", data_dir)
    two = run(TINY.replace(steps_per_call=2), tmp_path / "two", data_dir)
    assert one["compiles"] == two["compiles"] == {"train_step": 1, "eval_step": 1}
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) and max(abs(a[s] - b[s]) for s in a) <= 1e-6


def test_any_step_count_trains_exactly_that_many_with_one_more_compile(tmp_path, data_dir):
    # 4 steps per call, 5 steps: a call of 4, then a call of 1 (one more compile), not a refusal
    cfg = TINY.replace(steps_per_call=4, optim=TINY.optim.replace(steps=5))
    summary = run(cfg, tmp_path / "k4", data_dir)
    assert summary["step"] == 5 and sorted(losses(tmp_path / "k4")) == [1, 2, 3, 4, 5]
    assert summary["call_lengths"] == [1, 4] and summary["compiles"]["train_step"] == 2
    one = run(cfg.replace(steps_per_call=1), tmp_path / "k1", data_dir)
    assert one["call_lengths"] == [1] and one["compiles"]["train_step"] == 1
    a, b = losses(tmp_path / "k4"), losses(tmp_path / "k1")
    assert max(abs(a[s] - b[s]) for s in a) <= 1e-6


def test_a_call_ends_early_at_an_eval_or_checkpoint_that_falls_inside_it(tmp_path, data_dir):
    cfg = TINY.replace(steps_per_call=4, eval_every=6, checkpoint_every=7, optim=TINY.optim.replace(steps=12))
    summary = run(cfg, tmp_path / "run", data_dir)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval_loss" in r] == [6, 12]
    assert sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir()) == [7, 12]
    assert sorted(r["step"] for r in rows if "loss" in r) == list(range(1, 13))
    # 0-4, 4-6 (eval), 6-7 (checkpoint), 7-11, 11-12 (the end)
    assert summary["call_lengths"] == [1, 2, 4]


def test_vocab_grows_to_fit_a_larger_tokenizer_rounded_to_64(data_dir):
    from guppy_jax.data.datadir import fit_vocab
    from guppy_jax.core.tokenizer import load_tokenizer
    have = load_tokenizer(data_dir / "tokenizer.json").get_vocab_size()
    small = TINY.replace(model=TINY.model.replace(vocab_size=1000))
    fitted, note = fit_vocab(small, data_dir)
    assert fitted.model.vocab_size % 64 == 0 and have <= fitted.model.vocab_size < have + 64
    assert f"the tokenizer's {have} ids rounded up to a multiple of 64" in note
    assert fit_vocab(TINY, data_dir) == (TINY, "")  # large enough: the preset's model is kept


def test_resume_refuses_a_different_config(tmp_path, data_dir):
    run(TINY, tmp_path / "run", data_dir, stop_after=2)
    with pytest.raises(TrainError, match=r"model.d_model: saved 32, now 64"):
        run(TINY.replace(model=TINY.model.replace(d_model=64)), tmp_path / "run", data_dir, resume=True)
    with pytest.raises(TrainError, match="already holds checkpoints"):
        run(TINY, tmp_path / "run", data_dir)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, data_dir, monkeypatch, capsys):
    real_step = steps.train_step

    def poisoned(state, batch, rng, dropout=True):  # the loss turns NaN from update 13 on
        new_state, metrics = real_step(state, batch, rng, dropout)
        metrics["loss"] = jnp.where(state.step >= 12, jnp.nan, metrics["loss"])
        return new_state, metrics
    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(TrainError, match="non-finite"):
        run(TINY, tmp_path / "run", data_dir)
    assert "non-finite loss at step 13" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["10"]


def test_bad_inputs_fail_early(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainError, match="cannot write to the output directory"):
        run(TINY, blocker / "run", data_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="missing data file .*train.jsonl"):
        run(TINY, tmp_path / "r2", tmp_path / "empty")
    with pytest.raises(TrainError, match="split has .* fewer than one batch of 100000"):
        run(TINY.replace(batch_size=100_000), tmp_path / "r3", data_dir)


def test_bfloat16_compute_trains_close_to_float32(tmp_path, data_dir):
    run(TINY, tmp_path / "f32", data_dir)
    summary = run(TINY.replace(dtype="bfloat16"), tmp_path / "bf16", data_dir)
    a, b = losses(tmp_path / "f32"), losses(tmp_path / "bf16")
    assert summary["status"] == "finished"
    diffs = [abs(a[s] - b[s]) for s in a]
    assert 0 < max(diffs) < 0.1  # really computed in bfloat16, and still the same training
    assert b[TINY.optim.steps] < b[1] - 0.5


def test_float16_trains_shows_the_loss_scale_and_resumes_bit_for_bit(tmp_path, data_dir):
    cfg = TINY.replace(dtype="float16", optim=TINY.optim.replace(steps=20), checkpoint_every=4)
    whole = run(cfg, tmp_path / "whole", data_dir)
    assert whole["dtype"] == "float16" and whole["loss_scale"] >= 2.0**16 and whole["skipped_steps"] >= 0
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_scale" in r and "skipped" in r for r in rows if "loss" in r)
    run(cfg, tmp_path / "split", data_dir, stop_after=8)
    run(cfg, tmp_path / "split", data_dir, resume=True)
    assert losses(tmp_path / "whole") == losses(tmp_path / "split")
    split = json.loads((tmp_path / "split" / "summary.json").read_text())
    assert (split["loss_scale"], split["skipped_steps"]) == (whole["loss_scale"], whole["skipped_steps"])


def test_running_out_of_memory_ends_with_a_hint_not_a_trace(tmp_path, data_dir, monkeypatch):
    import guppy_jax.training.loop as trainer

    def step_that_runs_out(*args):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.")
    step_that_runs_out.traces = lambda: 0  # as steps.make_train_step's functions have
    monkeypatch.setattr(trainer, "make_train_step", lambda k: step_that_runs_out)
    with pytest.raises(TrainError, match=r"ran out of memory .* smaller --batch-size .* --no-preallocate"):
        run(TINY, tmp_path / "run", data_dir)
