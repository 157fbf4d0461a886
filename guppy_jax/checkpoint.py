"""Run directories and orbax checkpoints.

A run directory is self-contained:
  config.json      the TrainConfig (model, optimizer, loop) of the run
  tokenizer.json   the tokenizer the model was trained with
  checkpoints/N/   periodic and final checkpoints (the latest `keep_checkpoints`)
  best/N/          the checkpoint with the lowest eval loss so far
  metrics.jsonl, loss_curve.png, summary.json
A checkpoint holds three items: `params` (the weights, all that chat, eval and export
read), `train_state` (step and optimizer state) and `meta` (JSON: the data iterator's
position and the best eval loss), so a resumed run continues bit for bit.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from .config import ModelConfig, TrainConfig


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used as asked."""


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(directory.resolve(), options=options)


class RunCheckpoints:
    """Periodic + best checkpoints of one run directory."""

    def __init__(self, run_dir, keep: int = 3):
        self.run_dir = Path(run_dir)
        self.periodic = _manager(self.run_dir / "checkpoints", keep)
        self.best = _manager(self.run_dir / "best", 1)

    def save(self, state, meta: dict, best: bool = False) -> None:
        step = int(state.step)
        manager = self.best if best else self.periodic
        if step in manager.all_steps():
            return
        items = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
            meta=ocp.args.JsonSave(meta))
        manager.save(step, args=items)
        manager.wait_until_finished()

    def latest_step(self):
        return self.periodic.latest_step()

    def _pick(self, step, best: bool):
        manager = self.best if best else self.periodic
        step = manager.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {manager.directory}")
        return manager, step

    def restore(self, state, step=None, best: bool = False):
        """Fill `state` (a freshly created TrainState of the same config) from a checkpoint;
        returns (state, meta)."""
        manager, step = self._pick(step, best)
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, {
            "params": state.params, "train_state": {"step": state.step, "opt_state": state.opt_state}})
        items = ocp.args.Composite(params=ocp.args.StandardRestore(abstract["params"]),
                                   train_state=ocp.args.StandardRestore(abstract["train_state"]),
                                   meta=ocp.args.JsonRestore())
        got = self._restore(manager, step, items)
        return state.replace(params=got["params"], step=got["train_state"]["step"],
                             opt_state=got["train_state"]["opt_state"]), dict(got["meta"])

    def restore_params(self, abstract_params, step=None, best: bool = False):
        """Only the weights (no optimizer state is read or built), shaped like
        `abstract_params` (e.g. `jax.eval_shape` of the model's init)."""
        manager, step = self._pick(step, best)
        items = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
        return self._restore(manager, step, items)["params"]

    @staticmethod
    def _restore(manager, step, items):
        try:
            return manager.restore(step, args=items)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"checkpoint {manager.directory / str(step)} does not fit this "
                                  f"model config: {err}") from None

    def close(self):
        self.periodic.close()
        self.best.close()


def write_run_config(run_dir, cfg: TrainConfig, preset: str, tokenizer_path) -> None:
    run_dir = Path(run_dir)
    payload = {"preset": preset, "train": cfg.to_dict()}
    (run_dir / "config.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    if Path(tokenizer_path).resolve() != (run_dir / "tokenizer.json").resolve():
        shutil.copyfile(tokenizer_path, run_dir / "tokenizer.json")


def read_run_config(run_dir) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.json); "
                              f"train one with `python -m guppy_jax.train --out {run_dir}`")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())["train"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable config: {err}") from None


RESUMABLE_DIFFERENCES = {"eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints"}


def config_differences(saved: TrainConfig, now: TrainConfig) -> list[str]:
    """Fields that differ in ways a resumed run cannot absorb (the loop cadence may change)."""
    diffs = []
    a, b = saved.to_dict(), now.to_dict()
    for group in ("model", "optim"):
        diffs += [f"{group}.{k}: saved {a[group][k]!r}, now {b[group][k]!r}"
                  for k in a[group] if a[group][k] != b[group][k]]
    diffs += [f"{k}: saved {a[k]!r}, now {b[k]!r}" for k in a
              if k not in ("model", "optim") and k not in RESUMABLE_DIFFERENCES and a[k] != b[k]]
    return diffs


def load_for_inference(run_dir, best: bool = True):
    """(ModelConfig, params, tokenizer) from a run directory: its best-eval checkpoint if
    there is one, else its latest. Reads the weights only."""
    from .model import abstract_params
    from .tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    ckpts = RunCheckpoints(run_dir)
    try:
        use_best = best and ckpts.best.latest_step() is not None
        if not use_best and ckpts.latest_step() is None:
            raise CheckpointError(f"{run_dir} has no checkpoint yet")
        params = ckpts.restore_params(abstract_params(cfg.model), best=use_best)
    finally:
        ckpts.close()
    return cfg.model, params, tok
