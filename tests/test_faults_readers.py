"""Readers of a run (chat, eval, export) against faults: a trainer deleting the checkpoint
being read, a lost config.json, damaged run files. Each asserts that nothing is lost, that
a healthy run is never called damaged, and that every refusal names the file and the fix.

The races are made deterministic, never slept for: a reader's first read of a step is
intercepted, and at that moment a real writer (RunCheckpoints, the trainer's own code path)
saves a newer step and rotates the old ones off the disk, as `train --keep-checkpoints 1`
does between a reader's listing of the steps and its read.
"""
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from guppy_jax import chat, convert, eval as guppy_eval
from guppy_jax.training.checkpoints import (CheckpointError, RunCheckpoints, RunConfigMissing, describe_missing_config,
                                  load_for_inference, read_run_config)
from guppy_jax.core.config import ModelConfig
from guppy_jax.export.convert_weights import params_to_state_dict
from guppy_jax.core.model import init_params
from guppy_jax.core.steps import create_state
from guppy_jax.export.weight_files import read_safetensors

NEW_STEP = 35  # the step the racing trainer saves; the trained run's steps are 20 and 30 (best: 30)


def one_line(text: str) -> str:
    text = text.strip()
    assert "Traceback" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))


def snapshot(folder: Path) -> list:
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def run_dir(tmp_path, trained) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained.run_dir, out)
    return out


class RacingTrainer:
    """Makes the first read of `folder`/`victim` lose a race with a trainer. `when`:
    "before": the trainer saves step NEW_STEP (keeping 1, so orbax's rotation deletes every
    older step of the folder) before the read starts; "during": the trainer has saved
    NEW_STEP, and the victim's files are being deleted as the read runs (orbax's deleter
    removes files first, then the folder), the folder gone once the read has failed."""

    def __init__(self, run_dir: Path, monkeypatch, folder: str, victim: int, when: str):
        self.run_dir, self.folder, self.victim, self.when, self.fired = run_dir, folder, victim, when, False
        cfg = read_run_config(run_dir)
        self.params = init_params(cfg.model, jax.random.key(7))  # unlike any step of the trained run
        self.state = create_state(cfg.model, cfg.optim, self.params).replace(step=jnp.asarray(NEW_STEP, jnp.int32))
        real = ocp.CheckpointManager.restore

        def restore(manager, step, *args, **kwargs):
            if self.fired or Path(manager.directory).name != folder or step != victim:
                return real(manager, step, *args, **kwargs)
            self.fired = True
            self.trainer_saves(keep=1 if when == "before" else 3)
            if when == "before":
                return real(manager, step, *args, **kwargs)
            doomed = Path(manager.directory) / str(step)
            shutil.rmtree(doomed / "params")  # the deleter is part way through
            try:
                return real(manager, step, *args, **kwargs)
            finally:
                shutil.rmtree(doomed)  # and done by the time the reader looks
        monkeypatch.setattr(ocp.CheckpointManager, "restore", restore)

    def trainer_saves(self, keep: int) -> None:
        writer = RunCheckpoints(self.run_dir, keep=keep)
        try:
            writer.save(self.state, {"data_position": {"epoch": 0, "index": 0}}, best=self.folder == "best")
        finally:
            writer.close()


# ----------------------------------------------------------------------------- 1. racing the trainer
def test_chat_latest_that_loses_a_race_with_checkpoint_rotation_answers_from_the_newest_step(
        run_dir, monkeypatch, capsys):
    race = RacingTrainer(run_dir, monkeypatch, "checkpoints", victim=30, when="before")
    assert chat.main(["--run-dir", str(run_dir), "--latest", "--prompt", "hi", "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert race.fired and captured.out.startswith("Guppy> ")
    assert "unreadable" not in captured.err and "error" not in captured.err, captured.err
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == [str(NEW_STEP)]


def test_a_step_deleted_while_it_is_read_is_not_called_unreadable_and_the_newest_step_is_used(
        run_dir, monkeypatch):
    race = RacingTrainer(run_dir, monkeypatch, "checkpoints", victim=30, when="during")
    notes = []
    _, params, _ = load_for_inference(run_dir, best=False, notes=notes)
    assert race.fired and notes == []
    assert same_weights(params, race.params)  # the trainer's new step, not the older step 20


def test_export_that_loses_a_race_for_the_best_checkpoint_exports_the_new_best(run_dir, tmp_path, monkeypatch,
                                                                             capsys):
    race = RacingTrainer(run_dir, monkeypatch, "best", victim=30, when="before")
    out = tmp_path / "export"
    assert convert.main(["export", str(run_dir), "--out", str(out)]) == 0, capsys.readouterr().err
    exported = read_safetensors(out / "model.safetensors")
    expected = params_to_state_dict(jax.device_get(race.params), read_run_config(run_dir).model)
    assert race.fired and set(exported) == set(expected)
    assert all(np.array_equal(exported[key], np.asarray(expected[key])) for key in expected)


# ----------------------------------------------------------------------------- 2. a lost config.json
@pytest.mark.parametrize("command", ["chat", "eval", "export"])
def test_a_run_that_lost_its_config_json_is_told_to_restore_it_and_nothing_is_deleted(
        run_dir, tmp_path, capsys, command):
    (run_dir / "config.json").unlink()
    before = snapshot(run_dir)
    argv = {"chat": lambda: chat.main(["--run-dir", str(run_dir), "--prompt", "hi"]),
            "eval": lambda: guppy_eval.main(["--run-dir", str(run_dir), "--quiet"]),
            "export": lambda: convert.main(["export", str(run_dir), "--out", str(tmp_path / "e")])}
    assert argv[command]() == 1
    err = one_line(capsys.readouterr().err)
    assert "holds checkpoints" in err and "no config.json" in err and "intact" in err
    assert f"Restore it to {run_dir / 'config.json'} from a copy" in err
    assert not any(word in err for word in ("Train one first", "not a run directory", "--force", "delete it"))
    assert snapshot(run_dir) == before


def test_a_lost_config_json_and_no_run_at_all_are_two_different_errors(run_dir, tmp_path):
    (run_dir / "config.json").unlink()
    with pytest.raises(RunConfigMissing) as lost:
        read_run_config(run_dir)
    assert str(lost.value) == describe_missing_config(run_dir)
    assert "checkpoints/30" in str(lost.value) and "best/30" in str(lost.value)
    (tmp_path / "empty").mkdir()
    assert describe_missing_config(tmp_path / "empty") is None
    with pytest.raises(CheckpointError, match="is not a run directory") as empty:
        read_run_config(tmp_path / "empty")
    assert not isinstance(empty.value, RunConfigMissing)


# ----------------------------------------------------------------------------- 3. damaged run files
@pytest.mark.parametrize("command", ["chat", "eval"])
def test_a_damaged_run_tokenizer_is_named_and_the_fix_is_to_copy_the_data_directorys(run_dir, capsys, command):
    path = run_dir / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": \n')
    main = chat.main if command == "chat" else guppy_eval.main
    assert main(["--run-dir", str(run_dir), "--prompt" if command == "chat" else "--quiet",
                 *(["hi"] if command == "chat" else [])]) == 1
    err = one_line(capsys.readouterr().err)
    assert f"{path} is damaged" in err
    assert "copy the tokenizer.json of the data directory this run was trained on" in err and str(path) in err


def edit_config(run_dir: Path, edit) -> Path:
    path = run_dir / "config.json"
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    return path


def test_a_run_config_without_its_optim_section_names_the_file_and_the_key(run_dir, capsys):
    path = edit_config(run_dir, lambda raw: raw["train"].pop("optim"))
    assert chat.main(["--run-dir", str(run_dir), "--prompt", "hi"]) == 1
    err = one_line(capsys.readouterr().err)
    assert str(path) in err and '"train.optim" is missing' in err and "restore" in err


def test_a_run_config_missing_a_model_field_is_refused_not_filled_with_a_default(run_dir, capsys):
    path = edit_config(run_dir, lambda raw: raw["train"]["model"].pop("d_model"))
    with pytest.raises(CheckpointError, match='"train.model.d_model" is missing'):
        read_run_config(run_dir)
    assert chat.main(["--run-dir", str(run_dir), "--prompt", "hi"]) == 1
    err = one_line(capsys.readouterr().err)
    assert str(path) in err and "train.model.d_model" in err and "384" not in err
    # the hub's and the original's configs still take the defaults for what they leave out
    assert ModelConfig.from_dict({"vocab_size": 2048}).d_model == 384
