"""The training loop, in three pieces a reader can hold one at a time.

    open_run   check the run directory, load the data, build or restore the TrainState
    run_loop   call the jitted step, read each call's metrics one call late, evaluate,
               checkpoint, stop on a signal or a non-finite loss
    finish     final checkpoint, summary.json, the loss curve

`train` strings them together (and lets the fish answer a few prompts at the end).
Everything that changes while the loop runs lives in one `LoopState`; everything that
stays fixed for the run lives in `Run`.

What survives what: Ctrl-C, SIGTERM and SIGHUP stop the loop between calls and save (a
second signal during the save waits for it); the run directory is locked against a second
writer; a resume falls back to the newest readable checkpoint; a failed save (disk full)
keeps the previous checkpoint and says so in one line.

With many processes (guppy_jax/distributed.py) every process runs all of this; process 0
alone prepares data, holds the lock, writes the logs and prints.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import ExitStack
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .checkpoint import (CheckpointSaveError, RunCheckpoints, RunLock, clear_run, config_differences,
                         holds_checkpoints, read_run_config, write_run_config)
from .cli import DEFAULT_DATA
from .config import ConfigError, TrainConfig
from .data import DataError, mean_eval_loss, non_pad_share, stack_batches
from .datadir import TrainingData, ensure_prepared, fit_vocab, load_for_training
from .distributed import any_process, barrier, is_main, same_everywhere, to_host, together
from .faults import moment
from .memory import check_train_fits, is_out_of_memory
from .mesh import Mesh, MeshError, check_batch, describe, make_mesh, mesh_shape, place_batch, place_state
from .model import GuppyLM, init_params
from .precision import compute_dtype, needs_loss_scaling, resolve
from .steps import LossScale, TrainState, create_state, make_eval_step, make_train_step

SAMPLE_PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry", "do you like the cat",
                  "what do you think about money"]


class TrainError(RuntimeError):
    """A run that cannot start or cannot go on, with the reason."""


@dataclass
class Run:
    """What stays fixed while a run trains."""
    cfg: TrainConfig
    out: Path
    preset: str
    data: TrainingData
    ckpts: RunCheckpoints
    metrics: "MetricsLog"
    step_fn: Callable   # jitted (state, batch, rng) -> (state, metrics); donates the state
    eval_fn: Callable   # jitted (params, batch) -> {"loss_sum", "tokens"}
    dropout_rng: jax.Array
    start_step: int
    mesh: Mesh          # the devices it trains on (guppy_jax/mesh.py): batches split, state placed
    notes: tuple[str, ...] = ()  # automatic choices the start line reports (a vocab fitted to the data)


@dataclass
class LoopState:
    """What changes while a run trains."""
    state: TrainState
    best_eval: float = math.inf
    pending: tuple[int, Any] | None = None  # (first step, metrics) of the last call, not read yet
    last_good_step: int = 0                 # the last step whose metrics were read and finite
    status: str = "finished"                # or "interrupted", "non-finite"
    non_pad_share: float | None = None      # of the first batch: how full the rows are
    call_lengths: set = dataclasses.field(default_factory=set)  # steps per jitted call, as run


class WriteError(RuntimeError):
    """A run file that could not be written (a full disk); the message says what is kept."""


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


class Throughput:
    """Real tokens per second since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.tokens, self.start = 0.0, time.perf_counter()

    def add(self, tokens: float) -> float:
        self.tokens += tokens
        elapsed = time.perf_counter() - self.start
        return self.tokens / elapsed if elapsed > 0 else 0.0


class StopOnSignal:
    """Turns Ctrl-C, SIGTERM (Colab, cloud preemption, `timeout`) and SIGHUP into a flag the
    loop checks between calls. A signal never interrupts a save: a second one only repeats
    that the run is stopping."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, quiet: bool = False):
        self.requested, self.quiet, self.previous = False, quiet, {}

    def _handler(self, signum, frame):
        if not self.quiet or self.requested:
            what = "still saving, please wait" if self.requested else "stopping: saving a checkpoint first"
            print(f"\n{signal.Signals(signum).name}: {what}", file=sys.stderr, flush=True)
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class EndOnSignal:
    """After the last save nothing is left to save: SIGTERM and SIGHUP end what is still
    running (the closing samples) the way Ctrl-C does, so the command exits 130 with a
    word instead of dying silently with 143."""

    def _handler(self, signum, frame):
        raise KeyboardInterrupt

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


# ----------------------------------------------------------------------------- open
def check_run_dir(cfg: TrainConfig, out: Path, resume: bool, force: bool = False) -> None:
    """A fresh run needs a run directory without checkpoints (--force clears one); a resumed
    one the same config."""
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
        together("clear the run directory", lambda: is_main() and clear_run(out))


def make_writable_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainError(f"cannot write to the output directory {out}: {err.strerror or err}") from None


def locked_run_dir(out) -> RunLock:
    """The run directory, made and checked writable, and its lock (process 0's to hold)."""
    make_writable_dir(Path(out))
    return RunLock(out)


def digest(path) -> str:
    """sha256 of a file's bytes: how a run recognises its tokenizer."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_identity(out: Path, saved: dict, data: TrainingData, data_dir) -> None:
    """A resumed run must find its own tokenizer (by the digest config.json recorded, when
    it did) and the data it was trained on (the data directory's digest, when both have one).
    A run whose tokenizer.json is missing gets it back from the data directory only when the
    digests prove it is the same file."""
    mine, theirs = out / "tokenizer.json", Path(data_dir) / "tokenizer.json"
    recorded = saved.get("tokenizer_digest")
    if not mine.exists():
        if recorded is None or digest(theirs) != recorded:
            raise TrainError(f"{mine} is missing, and {theirs} is not provably the tokenizer this run was "
                             f"trained with: copy that tokenizer.json (the one in the data directory the run "
                             f"started from) to {mine}, then --resume")
        if is_main():
            shutil.copyfile(theirs, mine)
            print(f"note: {mine} was missing: restored from {theirs} (the same file, by its digest)",
                  file=sys.stderr)
    elif recorded is not None and digest(mine) != recorded:
        raise TrainError(f"{mine} is not the tokenizer this run was trained with (its digest is not the one "
                         f"in {out / 'config.json'}): put the run's own tokenizer.json back, then --resume")
    if json.loads(mine.read_text()) != json.loads(theirs.read_text()):
        raise TrainError(f"{theirs} is not the tokenizer {out} was trained with ({mine}): resume with "
                         f"the --data-dir the run started from")
    had, has = saved.get("data_digest"), getattr(data, "digest", None)
    if had is not None and has is not None and had != has:
        raise TrainError(f"{data_dir} is not the data {out} was trained on (its digest differs from the one in "
                         f"{out / 'config.json'}): resume with the --data-dir the run started from, or start a "
                         f"new run from this one's weights with --init-from {out}")


def restore(ckpts: RunCheckpoints, loop: LoopState, data: TrainingData, out: Path) -> None:
    """Continue from the newest readable checkpoint, or from step 0 when the run stopped
    before its first complete save."""
    if not holds_checkpoints(out):
        if is_main():
            print(f"note: {out} has no complete checkpoint yet (the run stopped before its first save): "
                  f"starting from step 0", file=sys.stderr)
        return
    best_only = not ckpts.periodic.all_steps()
    loop.state, meta = ckpts.restore(loop.state, best=best_only)
    if best_only and is_main():
        print(f"note: {out / 'checkpoints'} holds no checkpoint: resuming from the best-eval one, "
              f"{out / 'best' / str(int(loop.state.step))}", file=sys.stderr)
    for note in ckpts.notes if is_main() else ():
        print(f"note: {note}", file=sys.stderr)
    data.train.seek(meta["data_position"])
    loop.best_eval = meta.get("best_eval", math.inf)


def open_mesh(cfg: TrainConfig, mesh_spec: str | None) -> Mesh:
    try:
        mesh = make_mesh(mesh_shape(mesh_spec, jax.device_count()))
        check_batch(cfg.batch_size, mesh)
    except MeshError as err:  # a mesh or batch that does not fit the devices: bad usage (exit 2)
        raise ConfigError(str(err)) from None
    return mesh


def open_data(cfg: TrainConfig, data_dir, quiet: bool, tokenizer=None) -> TrainingData:
    """The batches. With many processes, process 0 loads first (preparing missing data),
    then the others, and all of them check that they read the same data."""
    def load():
        try:
            return load_for_training(cfg, data_dir, quiet, tokenizer)
        except DataError as err:
            raise TrainError(str(err)) from None
    first = together("load the data", lambda: load() if is_main() else None)
    rest = together("load the data", lambda: None if is_main() else load())
    data = first if is_main() else rest
    if jax.process_count() > 1:
        some = data.train.samples[::max(1, len(data.train.samples) // 997)]
        same_everywhere(data.tok.to_str().encode() + repr((data.report, some)).encode(),
                        "training data (tokenizer, samples)")
    return data


def saved_run(run_dir) -> dict:
    """The run directory's config.json as written ({"preset", "train", and "init_from" for a
    run that started from another run's weights}); {} when there is none."""
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as err:
        raise TrainError(f"{path}: unreadable ({err})") from None


def load_source(cfg: TrainConfig, source) -> dict:
    """The weights of the run `cfg` starts from (its best checkpoint, else its newest), checked
    against cfg's model: only dropout may differ."""
    from .checkpoint import CheckpointError, load_for_inference
    try:
        model, params, _ = load_for_inference(source)
    except CheckpointError as err:
        raise TrainError(f"--init-from {source}: {err}") from None
    mine, theirs = cfg.model.replace(dropout=0.0).to_dict(), model.replace(dropout=0.0).to_dict()
    diffs = [f"{k}: {theirs[k]} there, {mine[k]} here" for k in mine if mine[k] != theirs[k]]
    if diffs:
        raise TrainError(f"--init-from {source}: its model differs ({'; '.join(diffs)}); leave the model "
                         f"flags out to train on its own")
    return params


def open_run(cfg: TrainConfig, out, data_dir=DEFAULT_DATA, resume: bool = False, preset: str = "custom",
             quiet: bool = False, force: bool = False, mesh_spec: str | None = None, init_from=None,
             fit_vocab_to_data: bool = False) -> tuple[Run, LoopState]:
    """Check the run directory, load the data, create the TrainState on the mesh (restored,
    and re-split for this mesh, when resuming; from another run's weights with `init_from`)
    and the jitted steps. `fit_vocab_to_data` grows a vocab too small for the data's tokenizer."""
    out = Path(out)
    mesh = open_mesh(cfg, mesh_spec)
    notes = []
    if fit_vocab_to_data:
        together("prepare the data", lambda: is_main() and ensure_prepared(data_dir, cfg.model.vocab_size, quiet))
        cfg, note = fit_vocab(cfg, data_dir)
        notes += [note] if note else []
    check_run_dir(cfg, out, resume, force)
    saved = saved_run(out) if resume else {}
    # a run started from another run's weights reads its data with that run's tokenizer
    init_from = saved.get("init_from") if resume else init_from
    tokenizer = None
    if init_from is not None:
        tokenizer = out / "tokenizer.json" if resume else Path(init_from) / "tokenizer.json"
    source_params = load_source(cfg, init_from) if init_from is not None and not resume else None
    data = open_data(cfg, data_dir, quiet, tokenizer)
    together("fit in memory", lambda: check_train_fits(cfg.model, cfg.batch_size, data.report["seq_len"],
                                                        jax.local_devices()[0]))
    if resume and init_from is None:
        together("check the run's tokenizer and data", lambda: is_main() and check_identity(out, saved, data, data_dir))
    tokenizer = tokenizer or Path(data_dir) / "tokenizer.json"
    identity = {key: saved[key] for key in ("tokenizer_digest", "data_digest", "init_from") if key in saved}
    if not resume:
        identity = {"tokenizer_digest": digest(tokenizer), "data_digest": getattr(data, "digest", None),
                    **({"init_from": str(init_from)} if init_from is not None else {})}
    together("write config.json", lambda: is_main() and write_run_config(
        out, cfg, preset, tokenizer, copy_tokenizer=not resume, identity=identity))
    dtype = compute_dtype(cfg.dtype)
    root = jax.random.key(cfg.seed)
    scaler = LossScale.create() if needs_loss_scaling(cfg.dtype) else None
    params = source_params if source_params is not None else init_params(cfg.model, jax.random.fold_in(root, 0))
    state = place_state(create_state(cfg.model, cfg.optim, params, dtype, scaler), mesh)
    ckpts = RunCheckpoints(out, cfg.keep_checkpoints)
    loop = LoopState(state)
    if resume:
        restore(ckpts, loop, data, out)
    start_step = int(loop.state.step)
    loop.last_good_step = start_step
    metrics = MetricsLog(out / "metrics.jsonl", keep_until_step=start_step if resume else None, enabled=is_main())
    for note in metrics.notes:
        print(f"note: {note}", file=sys.stderr)
    run = Run(cfg, out, preset, data, ckpts, metrics, make_train_step(cfg.steps_per_call),
              make_eval_step(GuppyLM(cfg.model, dtype).apply), jax.random.fold_in(root, 1), start_step, mesh,
              tuple(notes))
    moment("run.opened")
    return run, loop


# ----------------------------------------------------------------------------- loop
def read_metrics(run: Run, loop: LoopState, bar, meter: Throughput) -> None:
    """Bring the last call's metrics to the host, log them, and check they are finite.
    Called one call late, so the device is already busy with the next call."""
    first_step, metrics = loop.pending
    loop.pending = None
    got = {key: np.atleast_1d(np.asarray(v, np.float64)) for key, v in jax.device_get(metrics).items()}
    for j in range(len(got["loss"])):
        m = {key: float(v[j]) for key, v in got.items()}
        skipped = bool(m.get("skipped", 0))  # float16: gradients overflowed, the update was skipped
        if not (math.isfinite(m["loss"]) and (skipped or math.isfinite(m["grad_norm"]))):
            raise FloatingPointError(f"non-finite loss at step {first_step + j} (loss {m['loss']}, "
                                     f"grad norm {m['grad_norm']})")
        tps = meter.add(m["tokens"])
        record = {"step": first_step + j, "loss": m["loss"], "lr": m["lr"],
                  "grad_norm": None if skipped else m["grad_norm"], "tokens_per_s": tps}
        if "loss_scale" in m:
            record.update(loss_scale=m["loss_scale"], skipped=skipped)
        run.metrics.write(record)
        shown = {"loss_scale": f"{m['loss_scale']:.0f}"} if "loss_scale" in m else {}
        bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.1e}", tok_s=f"{tps:,.0f}", **shown, refresh=False)
        bar.update(1)
    loop.last_good_step = first_step + len(got["loss"]) - 1


def meta(run: Run, loop: LoopState) -> dict:
    """What a checkpoint stores beside the arrays."""
    return {"data_position": run.data.train.position, "best_eval": loop.best_eval}


def save(run: Run, loop: LoopState, best: bool = False) -> None:
    """A checkpoint of the state as it is (periodic, or the best-eval one)."""
    run.ckpts.save(loop.state, meta(run, loop), best=best)
    if not best:
        run.metrics.kept_until = int(loop.state.step)
    moment("checkpoint.saved")


def evaluate(run: Run, loop: LoopState, step: int, bar, quiet: bool) -> None:
    """Held-out loss; a new best is saved in best/."""
    eval_loss = mean_eval_loss(run.eval_fn, loop.state.params, run.data.eval.one_pass(),
                               run.cfg.eval_batches)
    run.metrics.write({"step": step, "eval_loss": eval_loss})
    if not quiet:
        bar.write(f"step {step}: eval loss {eval_loss:.4f}" + (" (best)" if eval_loss < loop.best_eval else ""))
    if eval_loss < loop.best_eval:
        loop.best_eval = eval_loss
        save(run, loop, best=True)


def call_length(step: int, end_step: int, cfg: TrainConfig) -> int:
    """How many steps the jitted call after `step` runs: steps_per_call, or fewer so that it
    ends exactly at the next evaluation, checkpoint or end_step (a shorter call compiles once
    more, since its stacked batch has another shape)."""
    n = min(cfg.steps_per_call, end_step - step)
    for every in (cfg.eval_every, cfg.checkpoint_every):
        n = min(n, every - step % every)
    return n


def run_loop(run: Run, loop: LoopState, end_step: int, stop: StopOnSignal, bar, quiet: bool) -> None:
    """Train from run.start_step to end_step, up to k steps per jitted call."""
    cfg, k = run.cfg, run.cfg.steps_per_call
    meter = Throughput()
    step = run.start_step
    while step < end_step:
        if any_process(stop.requested):  # every process stops at the same step
            loop.status = "interrupted"
            break
        n = call_length(step, end_step, cfg)
        chunk = [next(run.data.train) for _ in range(n)]
        if loop.non_pad_share is None:
            loop.non_pad_share = non_pad_share(chunk[0])
            if not np.any(chunk[0]["loss_mask"]):
                raise ConfigError(f"the first batch holds no token to predict (rows of {chunk[0]['loss_mask'].shape[1]} "
                                  f"tokens): nothing would be learned; use a longer --seq-len, or data with "
                                  f"conversations of two tokens or more")
        batch = place_batch(chunk[0] if k == 1 else stack_batches(chunk), run.mesh, stacked=k > 1)
        loop.state, metrics = run.step_fn(loop.state, batch, run.dropout_rng)
        loop.call_lengths.add(n)
        if loop.pending is not None:
            read_metrics(run, loop, bar, meter)
        loop.pending = (step + 1, metrics)
        if step == run.start_step:  # the first call includes compilation: time tokens/s after it
            jax.block_until_ready(metrics)
            meter.reset()
        step = done = step + n
        if done % cfg.eval_every == 0 or done == cfg.optim.steps:
            read_metrics(run, loop, bar, meter)
            evaluate(run, loop, done, bar, quiet)
        if done % cfg.checkpoint_every == 0:
            if loop.pending is not None:
                read_metrics(run, loop, bar, meter)
            save(run, loop)
    if loop.pending is not None:
        read_metrics(run, loop, bar, meter)


# ----------------------------------------------------------------------------- finish
def finish(run: Run, loop: LoopState, started: float) -> dict:
    """Save the final state (unless the loss went non-finite), write summary.json and the
    loss curve; returns the summary."""
    from .plots import plot_losses
    try:
        if loop.status in ("finished", "interrupted"):
            save(run, loop)
    finally:
        run.ckpts.close()
        run.metrics.close()
    step = int(loop.state.step) if loop.status in ("finished", "interrupted") else loop.last_good_step
    summary = {"preset": run.preset, "status": loop.status, "step": step,
               "wall_s": time.perf_counter() - started, "best_eval_loss": loop.best_eval,
               "compiles": {"train_step": run.step_fn._cache_size(), "eval_step": run.eval_fn._cache_size()},
               "call_lengths": sorted(loop.call_lengths),
               "non_pad_share": loop.non_pad_share, "params": run.cfg.model.num_params(),
               "backend": jax.default_backend(), "dtype": run.cfg.dtype, "devices": int(run.mesh.devices.size),
               "processes": jax.process_count(), "mesh": dict(run.mesh.shape), **run.data.report}
    if loop.state.loss_scale is not None and loop.status in ("finished", "interrupted"):
        summary.update(loss_scale=float(loop.state.loss_scale.scale), skipped_steps=int(loop.state.loss_scale.skipped))
    if not is_main():
        return summary
    try:
        (run.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        moment("summary.written")
        plot_losses(run.out / "metrics.jsonl", run.out / "loss_curve.png")
    except OSError as err:
        print(f"note: could not write summary.json or loss_curve.png: {err.strerror or err}", file=sys.stderr)
    return summary


def print_samples(cfg: TrainConfig, params, tok) -> None:
    """The fish answers a few prompts with the weights it has now (in process 0; every
    process takes part in gathering the weights)."""
    from .generate import default_answer_len, generate
    from .tokenizer import decode, encode, format_prompt
    params = to_host(params)
    if not is_main():
        return
    moment("samples.start")
    prompts = [encode(tok, format_prompt(p)) for p in SAMPLE_PROMPTS]
    answers = generate(cfg.model, params, prompts, jax.random.key(cfg.seed),
                       max_new_tokens=default_answer_len(cfg.model))
    print("\nwhat the model says now:")
    for p, a in zip(SAMPLE_PROMPTS, answers):
        print(f"  You> {p}\n  Guppy> {decode(tok, a)}")


def start_line(run: Run, end_step: int) -> str:
    cfg, report = run.cfg, run.data.report
    return (f"run {run.out}: preset {run.preset}, {cfg.model.num_params():,} params, batch {cfg.batch_size} x "
            f"{report['seq_len']} ({'packed' if cfg.packing else 'padded'}), steps {run.start_step}->{end_step} "
            f"on {describe(run.mesh)} in {cfg.dtype}; {report['train_samples']} train / "
            f"{report['eval_samples']} eval samples" + "".join(f"; {note}" for note in run.notes))


def out_of_memory_hint(cfg: TrainConfig) -> str:
    return (f"the device ran out of memory (batch {cfg.batch_size}, {cfg.model.num_params():,} params): try a "
            f"smaller --batch-size (now {cfg.batch_size}) or --steps-per-call, or --no-preallocate so that JAX "
            f"does not take 75% of GPU memory up front; the last checkpoint is kept, continue with --resume")


def train(cfg: TrainConfig, out, data_dir=DEFAULT_DATA, resume: bool = False, preset: str = "custom",
          stop_after: int | None = None, quiet: bool = False, show_samples: bool = True,
          force: bool = False, mesh: str | None = None, init_from=None, fit_vocab_to_data: bool = False) -> dict:
    """Run (or resume) training; returns the summary written to out/summary.json.

    `init_from`: a run directory whose weights (best checkpoint first), model and tokenizer a
    fresh run starts from, with a new optimizer and schedule (fine-tuning an imported model).
    `fit_vocab_to_data`: grow cfg's vocab when the data's tokenizer has more ids
    (datadir.fit_vocab), for a user who did not choose one."""
    started = time.perf_counter()
    if stop_after is not None and stop_after <= 0:
        raise ConfigError(f"--stop-after must be at least 1, got {stop_after}")
    if init_from is not None and resume:
        raise ConfigError("--init-from starts a new run; --resume continues one: pass one of them")
    asked_quiet, quiet = quiet, quiet or not is_main()  # with many processes, process 0 speaks for all
    dtype, why = resolve(cfg.dtype, jax.devices()[0])
    if not quiet:
        print(f"precision: {dtype} ({why})", flush=True)
    cfg = cfg.replace(dtype=dtype)  # the run stores what it computes in
    with ExitStack() as held, StopOnSignal(quiet) as stop:
        together("open the run directory", lambda: is_main() and held.enter_context(locked_run_dir(out)))
        run, loop = open_run(cfg, out, data_dir, resume, preset, quiet, force, mesh, init_from, fit_vocab_to_data)
        summary = train_and_finish(run, loop, stop_after, stop, quiet, started)
    if loop.status == "interrupted" and is_main():
        print(f"interrupted: saved step {summary['step']} to {run.out / 'checkpoints'}; "
              f"continue with --resume", flush=True)
    if show_samples and not asked_quiet and loop.status == "finished":  # every process gathers the weights
        try:
            with EndOnSignal():
                print_samples(run.cfg, loop.state.params, run.data.tok)
        except KeyboardInterrupt:
            print("\n(samples skipped; the run is saved)", flush=True)
            summary["samples_interrupted"] = True
    if not quiet:
        lengths = summary["call_lengths"]
        calls = f" (calls of {' and '.join(map(str, lengths))} steps)" if len(lengths) > 1 else ""
        print(f"\n{loop.status} at step {summary['step']} in {summary['wall_s']:.0f}s; best eval loss "
              f"{loop.best_eval:.4f}; compiled train step {summary['compiles']['train_step']}x{calls}, eval step "
              f"{summary['compiles']['eval_step']}x; loss curve: {run.out / 'loss_curve.png'}")
    return summary


def train_and_finish(run: Run, loop: LoopState, stop_after, stop: StopOnSignal, quiet: bool,
                     started: float) -> dict:
    """The loop with its progress bar, then `finish`; a non-finite loss or a failed save
    ends in a TrainError that says what is kept."""
    from tqdm import tqdm
    cfg, total = run.cfg, run.cfg.optim.steps
    end_step = total if stop_after is None else min(total, run.start_step + stop_after)
    if not quiet:
        print(start_line(run, end_step), flush=True)
        report = run.data.report
        if report["truncated"] or report["dropped"]:
            print(f"note: {report['truncated']} samples truncated and {report['dropped']} dropped "
                  f"(longer than {cfg.model.max_seq_len} tokens, or under 2)")
    bar = tqdm(total=total, initial=run.start_step, disable=quiet, unit="step", dynamic_ncols=True)
    failure = None
    try:
        run_loop(run, loop, end_step, stop, bar, quiet)
    except FloatingPointError as err:
        loop.status = "non-finite"
        kept = run.ckpts.latest_step()
        print(f"error: {err}. Stopped; " + (f"the last saved checkpoint (step {kept}) in {run.out / 'checkpoints'} "
              f"is untouched." if kept is not None else "no checkpoint had been saved yet."), file=sys.stderr)
    except (CheckpointSaveError, WriteError) as err:
        loop.status, failure = "save-failed", str(err)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        loop.status, failure = "out-of-memory", out_of_memory_hint(run.cfg)
    finally:
        bar.close()
    try:
        summary = finish(run, loop, started)
    except (CheckpointSaveError, WriteError) as err:
        raise TrainError(str(err)) from None
    if loop.status == "non-finite":
        raise TrainError("training stopped: non-finite loss (see above)")
    if failure:
        raise TrainError(failure)
    return summary
