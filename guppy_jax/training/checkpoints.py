"""Run directories and orbax checkpoints.

A run directory is self-contained:
  config.json      the TrainConfig (model, optimizer, loop) of the run
  tokenizer.json   the tokenizer the model was trained with
  checkpoints/N/   periodic and final checkpoints (the latest `keep_checkpoints`)
  best/N/          the checkpoint with the lowest eval loss so far
  metrics.jsonl, loss_curve.png, summary.json
  .lock            held by the one process that writes the run (train, convert import)
A checkpoint holds three items: `params` (the weights, all that chat, eval and export
read), `train_state` (step, optimizer state, and the loss scale of a float16 run) and
`meta` (JSON: the data iterator's position and the best eval loss), so a resumed run
continues bit for bit, on any number of devices (the arrays are re-split on restore).

Nothing is lost silently: orbax writes a step into a temporary directory and renames it
when complete, so a crash mid-save leaves the previous checkpoints intact (the temporary
one is removed on the next start); a failed save (disk full) removes its partial files and
says so in one line; a restore falls back from an unreadable checkpoint to the newest
readable one and says which (`notes`).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from ..core.config import TrainConfig
from .distributed import any_process, barrier

RUN_FILES = ("config.json", "tokenizer.json", "metrics.jsonl", "summary.json", "loss_curve.png")
CHECKPOINT_DIRS = ("checkpoints", "best", "unreadable")


class CheckpointError(ValueError):
    """A run directory or checkpoint that cannot be used as asked."""


class CheckpointSaveError(CheckpointError):
    """A save that failed (disk full, I/O error); its partial files are already removed."""


MAX_VANISHED = 20  # steps deleted under a reader in a row before it gives up

READ_ONLY_NOTICE = "Given directory is read only"  # how orbax's log record for a read-only manager starts


class _DropReadOnlyNotice(logging.Filter):
    """Drops orbax's WARNING that a manager is read only: it is made read only on purpose
    (inference writes nothing), so the notice would only alarm a user who did nothing wrong.
    Any other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(READ_ONLY_NOTICE)


def _manager(directory: Path, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
    # with many processes, the periodic and best managers save the same step through barriers
    # that older orbax names by step alone: a prefix keeps the two managers' barriers apart
    apart = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name)
    if not read_only:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=False, multiprocessing_options=apart)
        return ocp.CheckpointManager(directory.resolve(), options=options)
    # inference: never create, clean or write anything
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0,
                                           enable_async_checkpointing=False, multiprocessing_options=apart)
    if os.environ.get("GUPPY_DEBUG", "") not in ("", "0"):  # --debug sets it  # --debug / GUPPY_DEBUG=1: the libraries' logs as they are
        return ocp.CheckpointManager(directory.resolve(), options=options)
    # orbax logs the read-only notice (through absl's logger) as the manager is made: drop that
    # one message, only while it is made, so every other warning still shows (from the commands
    # and from the Python API alike)
    absl_logger, drop = logging.getLogger("absl"), _DropReadOnlyNotice()
    absl_logger.addFilter(drop)
    try:
        return ocp.CheckpointManager(directory.resolve(), options=options)
    finally:
        absl_logger.removeFilter(drop)


def _reason(err: Exception) -> str:
    """One short line for why a checkpoint could not be read or written."""
    text = " ".join(str(err).split())
    if "No space left" in text or getattr(err, "errno", None) == errno.ENOSPC:
        return "the disk is full"
    return f"{type(err).__name__}: {text[:160]}" + ("..." if len(text) > 160 else "")


def holds_checkpoints(run_dir) -> bool:
    """True when the run directory has a complete checkpoint (temporary ones do not count)."""
    return any(p.is_dir() and p.name.isdigit() for sub in ("checkpoints", "best")
               for p in (Path(run_dir) / sub).glob("*"))


def clear_run(run_dir) -> None:
    """Remove what a run wrote into run_dir (checkpoints, logs, config): for --force."""
    run_dir = Path(run_dir)
    for name in CHECKPOINT_DIRS:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run directory for the process that writes it. The OS drops
    the lock when the process ends, even by SIGKILL, so it never goes stale."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)

    def __enter__(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(self.run_dir / ".lock", "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise CheckpointError(f"{self.run_dir} is in use by another process (pid {holder}): wait for "
                                  f"it to finish, or choose another --run-dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        return False


def _train_state_item(state) -> dict:
    item = {"step": state.step, "opt_state": state.opt_state}
    if state.loss_scale is not None:
        scale = state.loss_scale
        item["loss_scale"] = {"scale": scale.scale, "good_steps": scale.good_steps, "skipped": scale.skipped}
    return item


def _with_train_state(state, item: dict):
    state = state.replace(step=item["step"], opt_state=item["opt_state"])
    if "loss_scale" in item:
        state = state.replace(loss_scale=state.loss_scale.replace(**item["loss_scale"]))
    return state


class RunCheckpoints:
    """Periodic + best checkpoints of one run directory. `notes` collects the fallbacks
    taken (an unreadable checkpoint skipped), for the caller to print."""

    def __init__(self, run_dir, keep: int = 3, read_only: bool = False):
        self.run_dir, self.read_only = Path(run_dir), read_only
        self.periodic = _manager(self.run_dir / "checkpoints", keep, read_only)
        self.best = _manager(self.run_dir / "best", 1, read_only)
        self.saved: set[tuple[str, int]] = set()  # what this process saved: saving it again is a no-op
        self.notes: list[str] = []

    # ------------------------------------------------------------------------- save
    def save(self, state, meta: dict, best: bool = False) -> None:
        """Save `state` at its step. A checkpoint at the same step (or, for best/, a later
        one) left by another run or a lost timeline is replaced, never silently kept."""
        step, kind = int(state.step), "best" if best else "periodic"
        manager = self.best if best else self.periodic
        if (kind, step) in self.saved:
            return
        for old in manager.all_steps():
            if old == step or (best and old > step):
                manager.delete(old)
        items = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            train_state=ocp.args.StandardSave(_train_state_item(state)),
            meta=ocp.args.JsonSave(meta))
        try:
            manager.save(step, args=items)
            manager.wait_until_finished()
        except Exception as err:  # orbax and tensorstore raise many types for one I/O failure
            raise CheckpointSaveError(self._failed_save(manager, step, err)) from None
        self.saved.add((kind, step))

    def _failed_save(self, manager, step: int, err: Exception) -> str:
        # the writes that were abandoned leave coroutines that Python reports, whenever they are
        # collected, as "never awaited": noise after the one line that says what happened
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
        try:  # let the writer threads that are still running give up first
            manager.wait_until_finished()
        except Exception:
            pass
        # a late write (a writer thread that had not given up yet, slower on a loaded machine)
        # can recreate a directory just removed: repeat until it has stayed gone for a quarter
        # of a second, for at most ten seconds
        clean_since, deadline = None, time.monotonic() + 10
        while time.monotonic() < deadline:
            partials = list(Path(manager.directory).glob(f"{step}.orbax-checkpoint-tmp*"))
            for partial in partials:
                shutil.rmtree(partial, ignore_errors=True)
            now = time.monotonic()
            clean_since = (clean_since or now) if not partials else None
            if clean_since is not None and now - clean_since >= 0.25:
                break
            time.sleep(0.02)
        kept = [s for s in manager.all_steps() if s != step]
        intact = f"checkpoint {max(kept)} is intact" if kept else "no earlier checkpoint exists"
        return (f"could not save step {step} to {manager.directory}: {_reason(err)}; the incomplete "
                f"files were removed and {intact}. Free space, then continue with --resume")

    def latest_step(self):
        return self.periodic.latest_step()

    # ------------------------------------------------------------------------- restore
    def _first_readable(self, listing, items, what: str):
        """Restore the newest (manager, step) of `listing()` that reads back; note the others.

        A step whose directory is gone when its read fails was deleted under us (a trainer
        rotating its checkpoints): a lost race, not damage. After any failed read the steps are
        listed again and the newest one not yet tried is read next, so a step that a trainer
        saved meanwhile is found (a step still being deleted fails while its directory exists;
        the trainer saved its successor first). Only steps that still exist after failing
        count as unreadable."""
        failures, tried, vanished = [], set(), []
        while True:
            untried = [(m, s) for m, s in listing() if (str(m.directory), s) not in tried]
            if not untried:
                break
            manager, step = untried[0]
            tried.add((str(manager.directory), step))
            where = Path(manager.directory) / str(step)
            try:
                got, failure = manager.restore(step, args=items), None
                self._check_finite(got.get("params"))
            except Exception as err:  # a truncated array, damaged JSON, a config that does not fit
                failure = err
            if any_process(failure is not None):  # with many processes, all skip it or none does
                if any_process(not where.exists()):
                    vanished.append(where)
                    if len(vanished) >= MAX_VANISHED:
                        break
                else:
                    why = _reason(failure) if failure else "unreadable in another process"
                    failures.append((manager, step, why))
                self._relist()
                continue
            for bad_manager, bad_step, why in failures:
                if not any_process(not (Path(bad_manager.directory) / str(bad_step)).exists()):
                    self.notes.append(f"{bad_manager.directory / str(bad_step)} is unreadable ({why}); "
                                      f"using {manager.directory / str(step)} instead")
                    self._set_aside(bad_manager, bad_step)
            return got
        failures = [(m, s, why) for m, s, why in failures
                    if not any_process(not (Path(m.directory) / str(s)).exists())]  # deleted after failing
        if failures:
            raise CheckpointError(f"no readable {what} in {self.run_dir}: " + "; ".join(
                f"{m.directory.name}/{s}: {why}" for m, s, why in failures))
        if len(vanished) >= MAX_VANISHED:
            raise CheckpointError(f"the checkpoints of {self.run_dir} were deleted while being read, "
                                  f"{len(vanished)} times in a row (a training run rotating them with a "
                                  f"small --keep-checkpoints?): try again, or once that run has finished")
        if vanished:
            gone = ", ".join(f"{p.parent.name}/{p.name}" for p in vanished)
            raise CheckpointError(f"no checkpoint left in {self.run_dir}: {gone} "
                                  f"{'was' if len(vanished) == 1 else 'were'} deleted while being read, "
                                  f"and no newer one took {'its' if len(vanished) == 1 else 'their'} place")
        raise CheckpointError(f"no checkpoint in {self.run_dir} yet")

    def _relist(self) -> None:
        """Read the step lists from disk again (another process may have saved or deleted)."""
        self.periodic.reload()
        self.best.reload()

    @staticmethod
    def _check_finite(params) -> None:
        def finite(leaf) -> bool:  # the parts this process holds (all of it, with one process)
            parts = [s.data for s in leaf.addressable_shards] if isinstance(leaf, jax.Array) else [leaf]
            return all(np.isfinite(np.asarray(part)).all() for part in parts)
        bad = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(params or {})
               if not finite(leaf)]
        if bad:
            raise ValueError(f"the weights hold NaN or inf values ({', '.join(bad[:3])})")

    def _set_aside(self, manager, step: int) -> None:
        """Move an unreadable checkpoint out of the way (to unreadable/), so that saving
        that step again is possible and nothing is deleted."""
        if self.read_only:
            return
        if jax.process_index() == 0:  # with many processes, one moves it and the others wait
            aside = self.run_dir / "unreadable" / f"{Path(manager.directory).name}-{step}"
            aside.parent.mkdir(exist_ok=True)
            shutil.rmtree(aside, ignore_errors=True)
            shutil.move(str(Path(manager.directory) / str(step)), aside)
        barrier("unreadable checkpoint set aside")
        manager.reload()

    def restore(self, state, step=None, best: bool = False):
        """Fill `state` (a freshly created TrainState of the same config) from the newest
        readable checkpoint (or `step`); returns (state, meta)."""
        manager = self.best if best else self.periodic
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, {
            "params": state.params, "train_state": _train_state_item(state)})
        items = ocp.args.Composite(params=ocp.args.StandardRestore(abstract["params"]),
                                   train_state=ocp.args.StandardRestore(abstract["train_state"]),
                                   meta=ocp.args.JsonRestore())

        def candidates():  # every step, newest first, listed again after a lost race
            return [(manager, s) for s in ([step] if step is not None else sorted(manager.all_steps(), reverse=True))]
        got = self._first_readable(candidates, items, "checkpoint")
        self.saved.add(("best" if best else "periodic", int(got["train_state"]["step"])))  # already on disk
        return _with_train_state(state.replace(params=got["params"]), got["train_state"]), dict(got["meta"])

    def restore_params(self, abstract_params, best: bool = True):
        """Only the weights (no optimizer state is read or built), shaped like
        `abstract_params`: from best/ first when `best`, then the periodic checkpoints,
        newest first, skipping unreadable ones."""
        def candidates():
            found = [(self.best, s) for s in sorted(self.best.all_steps(), reverse=True)] if best else []
            return found + [(self.periodic, s) for s in sorted(self.periodic.all_steps(), reverse=True)]
        items = ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params))
        return self._first_readable(candidates, items, "weights")["params"]

    def close(self):
        self.periodic.close()
        self.best.close()


def write_run_config(run_dir, cfg: TrainConfig, preset: str, tokenizer_path, copy_tokenizer: bool = True,
                     identity: dict | None = None) -> None:
    """config.json, and the tokenizer beside it (a resumed run keeps its own). `identity`
    adds what the trainer checks on resume (the tokenizer's and the data's digests, the run
    whose weights this one started from)."""
    run_dir = Path(run_dir)
    payload = {"preset": preset, "train": cfg.to_dict(), **(identity or {})}
    (run_dir / "config.json").write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    mine = run_dir / "tokenizer.json"
    if (copy_tokenizer or not mine.exists()) and Path(tokenizer_path).resolve() != mine.resolve():
        shutil.copyfile(tokenizer_path, mine)


class RunConfigMissing(CheckpointError):
    """A run directory that holds checkpoints but has lost its config.json."""


def _step_names(run_dir) -> list[str]:
    """The complete checkpoints of a run, as "checkpoints/30", newest first within each folder."""
    names = []
    for sub in ("best", "checkpoints"):
        steps = [int(p.name) for p in (Path(run_dir) / sub).glob("*") if p.is_dir() and p.name.isdigit()]
        names += [f"{sub}/{step}" for step in sorted(steps, reverse=True)]
    return names


def describe_missing_config(run_dir) -> str | None:
    """What is wrong, and how to recover, when `run_dir` holds checkpoints but no config.json;
    None when it has its config.json or holds no checkpoint (then it is simply not a run)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if path.exists() or not holds_checkpoints(run_dir):
        return None
    names = _step_names(run_dir)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return (f"{run_dir} holds checkpoints ({shown}) but no config.json: the weights are intact, but "
            f"config.json, which records the model and recipe they were trained with, is missing. Restore it "
            f"to {path} from a copy of this run (a backup, or the directory this run was copied from); "
            f"nothing needs to be deleted or trained again")


def read_run_config(run_dir) -> TrainConfig:
    """The TrainConfig in run_dir/config.json. Strict, unlike ModelConfig.from_dict: a missing
    model or optimizer field is refused (naming the file and the key), never filled with a
    default that may not be what the run was trained with. Loop fields added to TrainConfig
    after a run was written take their defaults. Raises CheckpointError (RunConfigMissing
    when checkpoints exist but config.json does not), one line that says what to do."""
    from dataclasses import fields

    from ..core.config import ModelConfig, OptimConfig
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        missing = describe_missing_config(run_dir)
        if missing:
            raise RunConfigMissing(missing)
        what = "no config.json and no checkpoint" if run_dir.is_dir() else "it does not exist"
        raise CheckpointError(f"{run_dir} is not a run directory ({what}); train one with "
                              f"`python -m guppy_jax.train --run-dir {run_dir}`")
    restore = f"restore {path} from a copy of this run"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is damaged (not valid JSON: {err}); {restore} (the checkpoints, "
                              f"which hold the weights, are not affected)") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read: {err.strerror or err}") from None
    train = raw.get("train") if isinstance(raw, dict) else None
    if not isinstance(train, dict):
        raise CheckpointError(f'{path}: the key "train" is missing (or not an object): it holds the run\'s '
                              f'config; {restore}')
    for group, cls in (("model", ModelConfig), ("optim", OptimConfig)):
        section = train.get(group)
        if not isinstance(section, dict):
            raise CheckpointError(f'{path}: the key "train.{group}" is missing (or not an object); {restore}')
        absent = [f"train.{group}.{f.name}" for f in fields(cls) if f.name not in section]
        if absent:
            keys = ", ".join(f'"{key}"' for key in absent)
            raise CheckpointError(f"{path}: the key{'s' if len(absent) > 1 else ''} {keys} "
                                  f"{'are' if len(absent) > 1 else 'is'} missing: a run's config must give "
                                  f"every {group} field, since a default may not be what the run was trained "
                                  f"with; {restore}, or add the key with the value the run was trained with")
    try:
        return TrainConfig.from_dict(train)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a usable run config: {err}; {restore}") from None


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


def load_for_inference(run_dir, best: bool = True, notes: list | None = None):
    """(ModelConfig, params, tokenizer) from a run directory: its best-eval checkpoint if
    there is one, else its latest readable one. Reads the weights only and writes nothing.
    Fallbacks taken are appended to `notes` when given."""
    from ..export.convert_weights import abstract_params
    from ..core.tokenizer import load_tokenizer

    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    if not holds_checkpoints(run_dir):
        raise CheckpointError(f"{run_dir} has no checkpoint yet")
    ckpts = RunCheckpoints(run_dir, read_only=True)
    try:
        # on this process's first device, whatever mesh the run was saved from
        here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=here),
                                          abstract_params(cfg.model))
        params = ckpts.restore_params(abstract, best=best)
    finally:
        ckpts.close()
    if notes is not None:
        notes.extend(ckpts.notes)
    return cfg.model, params, tok
