"""A run directory's files besides the checkpoints, and the checks made before training
into one (the checkpoints themselves: guppy_jax/checkpoint.py).

    config.json     the TrainConfig, the preset, and the run's identity: the digests of its
                    tokenizer and data, and the run it started from (--init-from)
    tokenizer.json  the tokenizer it was trained with
    metrics.jsonl   one record per step and per eval, appended as they come

Nothing here loses work: the metrics log is rewritten on resume by swapping in a complete
new file, a run without its config.json or tokenizer is explained rather than cleared, and
a resume is refused when the tokenizer or the data is not the run's own.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from .checkpoints import RunLock, clear_run, config_differences, holds_checkpoints, read_run_config
from ..core.config import TrainConfig
from ..data.datadir import file_digest
from .distributed import barrier, main_only, together
from ..core.faults import moment


class TrainError(RuntimeError):
    """A run that cannot start or cannot go on, with the reason."""


class WriteError(RuntimeError):
    """A run file that could not be written (a full disk); the message says what is kept."""


# ----------------------------------------------------------------------------- config.json
def saved_run(run_dir) -> dict:
    """The run directory's config.json as written ({"preset", "train", the identity keys});
    {} when there is none."""
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as err:
        raise TrainError(f"{path}: unreadable ({err})") from None


def check_run_dir(cfg: TrainConfig, out: Path, resume: bool, force: bool = False) -> None:
    """A fresh run needs a run directory without checkpoints (--force clears one); a resumed
    one the same config. A directory with checkpoints but no config.json is never cleared
    unasked: the weights in it are still good."""
    if holds_checkpoints(out) and not (out / "config.json").exists() and (resume or not force):
        raise TrainError(f"{out} holds checkpoints but no config.json, the file that says which model they "
                         f"are: the weights are safe in {out / 'checkpoints'} and {out / 'best'}. Put the "
                         f"run's config.json back in {out} (from a copy) to --resume, or train into another "
                         f"--run-dir")
    if resume:
        saved = read_run_config(out)
        if saved.dtype == "auto":  # an imported run: it computes in whatever this device picks
            saved = saved.replace(dtype=cfg.dtype)
        diffs = config_differences(saved, cfg)
        if diffs:
            raise TrainError(f"{out} holds a run with a different config; refusing to resume:\n  "
                             + "\n  ".join(diffs))
    elif holds_checkpoints(out):
        if not force:
            raise TrainError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                             f"--force to delete it and start over, or choose another --run-dir")
        barrier("run directory checked")  # every process has looked before process 0 clears it
        together("clear the run directory", main_only(clear_run, out))


def check_identity(out: Path, saved: dict, data, data_dir, report) -> None:
    """A resumed run must find its own tokenizer (by the digest config.json recorded, when
    it did) and the data it was trained on (the data directory's digest, when both have one).
    A run whose tokenizer.json is missing gets it back from the data directory only when the
    digests prove it is the same file."""
    mine, theirs = out / "tokenizer.json", Path(data_dir) / "tokenizer.json"
    recorded = saved.get("tokenizer_digest")
    if not mine.exists():
        if recorded is None or file_digest(theirs) != recorded:
            raise TrainError(f"{mine} is missing, and {theirs} is not provably the tokenizer this run was "
                             f"trained with: copy that tokenizer.json (the one in the data directory the run "
                             f"started from) to {mine}, then --resume")
        shutil.copyfile(theirs, mine)
        report.note(f"{mine} was missing: restored from {theirs} (the same file, by its digest)")
    elif recorded is not None and file_digest(mine) != recorded:
        raise TrainError(f"{mine} is not the tokenizer this run was trained with (its digest is not the one "
                         f"in {out / 'config.json'}): put the run's own tokenizer.json back, then --resume")
    if json.loads(mine.read_text()) != json.loads(theirs.read_text()):
        raise TrainError(f"{theirs} is not the tokenizer {out} was trained with ({mine}): resume with "
                         f"the --data-dir the run started from")
    had, has = saved.get("data_digest"), data.digest
    if had is not None and has is not None and had != has:
        raise TrainError(f"{data_dir} is not the data {out} was trained on (its digest differs from the one in "
                         f"{out / 'config.json'}): resume with the --data-dir the run started from, or start a "
                         f"new run from this one's weights with --init-from {out}")


def locked_run_dir(out) -> RunLock:
    """The run directory, made and checked writable, and its lock (process 0's to hold)."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainError(f"cannot write to the output directory {out}: {err.strerror or err}") from None
    return RunLock(out)


# ----------------------------------------------------------------------------- metrics.jsonl
class MetricsLog:
    """metrics.jsonl, one JSON record a line, appended and flushed as steps are read. On
    resume, lines past the checkpoint's step are dropped (those steps are trained again): the
    kept lines go to a new file that replaces the old one in one rename, so a kill at any
    moment leaves the old history or the new, never an empty file. Only process 0 writes it
    (`enabled`); `kept_until` names the checkpoint that a failed write leaves intact."""

    def __init__(self, path: Path, keep_until_step: int | None = None, enabled: bool = True):
        self.path, self.notes, self.file = path, [], None
        self.kept_until = keep_until_step
        if not enabled:
            return
        try:
            if keep_until_step is not None and path.exists():
                self._keep_until(keep_until_step)
            self.file = open(path, "a" if keep_until_step is not None else "w")
        except OSError as err:
            raise WriteError(self._failed(err)) from None

    def _keep_until(self, step: int) -> None:
        kept = []
        for lineno, line in enumerate(self.path.read_text(errors="replace").splitlines(), start=1):
            at = self._step(line)
            if at is None and line.strip():  # a line torn by a crash mid-write
                self.notes.append(f"{self.path}:{lineno}: dropped an unreadable line")
            elif at is not None and at <= step:
                kept.append(line + "\n")
        fresh = self.path.with_name(self.path.name + ".new")
        with open(fresh, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        moment("metrics.rewritten")
        os.replace(fresh, self.path)  # atomic: the old history until here, the kept one after
        moment("metrics.replaced")

    @staticmethod
    def _step(line: str):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            return None

    def write(self, record: dict) -> None:
        if self.file is not None:
            try:
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()
            except OSError as err:
                raise WriteError(self._failed(err)) from None
            moment("metrics.written")

    def _failed(self, err: OSError) -> str:
        reason = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        kept = (f"checkpoint {self.kept_until} and the metrics up to it are intact"
                if self.kept_until else "the checkpoints saved so far and their metrics are intact")
        return f"could not write {self.path}: {reason}; {kept}. Free space, then continue with --resume"

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
