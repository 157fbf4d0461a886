"""The training loop, in three pieces a reader can hold one at a time.

    open_run   check the run directory, load the data, build or restore the TrainState
    run_loop   call the jitted step, read each call's metrics one call late, evaluate,
               checkpoint, stop on a signal or a non-finite loss
    finish     final checkpoint, summary.json, the loss curve

`train(cfg, options, report)` strings them together (and lets the fish answer a few
prompts at the end). `TrainOptions` says where and how to run a TrainConfig; a `Reporter`
(training/report.py) does all the printing. Everything that changes while the loop runs
lives in one `LoopState`; everything that stays fixed for the run lives in `Run`.

What survives what: Ctrl-C, SIGTERM and SIGHUP stop the loop between calls and save (a
second signal during the save waits for it); the run directory is locked against a second
writer; a resume falls back to the newest readable checkpoint; a failed save or log write
(disk full) keeps the previous checkpoint and says so in one line.

With many processes (guppy_jax/distributed.py) every process runs all of this; process 0
alone prepares data, holds the lock, writes the logs and prints.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from .checkpoints import CheckpointError, CheckpointSaveError, RunCheckpoints, holds_checkpoints, write_run_config
from ..core.config import ConfigError, TrainConfig
from ..data.batches import DataError, mean_eval_loss, non_pad_share, stack_batches
from ..data.datadir import TrainingData, ensure_prepared, fit_vocab, load_for_training
from .distributed import any_process, is_main, main_only, same_everywhere, to_host, together
from ..core.faults import moment
from ..core.memory import check_train_fits, is_out_of_memory
from .mesh import Mesh, MeshError, check_batch, describe, local_rows, make_mesh, mesh_shape, place_batch, place_state
from ..core.model import GuppyLM, init_params
from ..core.paths import DEFAULT_DATA, DEFAULT_RUN
from ..core.precision import compute_dtype, needs_loss_scaling, resolve
from ..core.steps import LossScale, TrainState, create_state, make_eval_step, make_train_step
from .report import EndOnSignal, Reporter, StopOnSignal, Throughput
from .run_dir import (MetricsLog, TrainError, WriteError, check_identity, check_run_dir,
                      locked_run_dir, saved_run)

__all__ = ["TrainOptions", "TrainError", "train", "open_run", "run_loop", "finish"]

SAMPLE_PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry", "do you like the cat",
                  "what do you think about money"]


@dataclass(frozen=True)
class TrainOptions:
    """Where and how to run a TrainConfig (what the config itself does not say)."""
    out: Path = DEFAULT_RUN               # the run directory
    data_dir: Path = DEFAULT_DATA         # a prepared data directory (the default one is made if missing)
    preset: str = "custom"                # the name recorded in config.json
    resume: bool = False                  # continue the run in `out` from its newest readable checkpoint
    force: bool = False                   # start over in an `out` that holds a run (deletes it)
    init_from: Path | None = None         # a run whose weights, model and tokenizer a new run starts from
    fit_vocab_to_data: bool = False       # grow cfg's vocab when the data's tokenizer has more ids
    stop_after: int | None = None         # train this many steps of this invocation, then save
    mesh: str | None = None               # "data=N,fsdp=M"; default: data parallel over every device
    show_samples: bool = True             # let the fish answer a few prompts at the end


@dataclass
class Run:
    """What stays fixed while a run trains."""
    cfg: TrainConfig
    out: Path
    preset: str
    data: TrainingData
    ckpts: RunCheckpoints
    metrics: MetricsLog
    step_fn: Callable   # jitted (state, batch, rng) -> (state, metrics); donates the state
    eval_fn: Callable   # jitted (params, batch) -> {"loss_sum", "tokens"}
    dropout_rng: jax.Array
    start_step: int
    mesh: Mesh          # the devices it trains on (guppy_jax/mesh.py): batches split, state placed
    report: Reporter
    notes: tuple[str, ...] = ()  # automatic choices the start line reports (a vocab fitted to the data)


@dataclass
class LoopState:
    """What changes while a run trains."""
    state: TrainState
    best_eval: float = math.inf
    pending: tuple[int, Any] | None = None  # (first step, metrics) of the last call, not read yet
    last_good_step: int = 0                 # the last step whose metrics were read and finite
    status: str = "finished"                # or "interrupted", "non-finite", "save-failed", "out-of-memory"
    non_pad_share: float | None = None      # of the first batch: how full the rows are
    call_lengths: set = dataclasses.field(default_factory=set)  # steps per jitted call, as run


# ----------------------------------------------------------------------------- open
def restore(ckpts: RunCheckpoints, loop: LoopState, data: TrainingData, out: Path, report: Reporter) -> None:
    """Continue from the newest readable checkpoint (the best-eval one when no periodic one
    is left), or from step 0 when the run stopped before its first complete save."""
    if not holds_checkpoints(out):
        report.note(f"{out} has no complete checkpoint yet (the run stopped before its first save): "
                    f"starting from step 0")
        return
    best_only = not ckpts.periodic.all_steps()
    loop.state, meta = ckpts.restore(loop.state, best=best_only)
    if best_only:
        report.note(f"{out / 'checkpoints'} holds no checkpoint: resuming from the best-eval one, "
                    f"{out / 'best' / str(int(loop.state.step))}")
    for note in ckpts.notes:
        report.note(note)
    data.train.seek(meta["data_position"])
    loop.best_eval = meta.get("best_eval", math.inf)


def open_mesh(cfg: TrainConfig, mesh_spec: str | None) -> Mesh:
    try:
        mesh = make_mesh(mesh_shape(mesh_spec, jax.device_count()))
        check_batch(cfg.batch_size, mesh)
    except MeshError as err:  # a mesh or batch that does not fit the devices: bad usage (exit 2)
        raise ConfigError(str(err)) from None
    return mesh


def open_data(cfg: TrainConfig, data_dir, quiet: bool, tokenizer=None, mesh: Mesh | None = None) -> TrainingData:
    """The batches. With many processes, process 0 loads first (preparing missing data),
    then the others, and all of them check that they read the same data; each reads only the
    rows of a train batch its own devices hold."""
    rows = local_rows(mesh, cfg.batch_size) if mesh is not None else None

    def load():
        try:
            return load_for_training(cfg, data_dir, quiet, tokenizer, rows=rows)
        except DataError as err:
            raise TrainError(str(err)) from None
    first = together("load the data", main_only(load))
    rest = together("load the data", lambda: None if is_main() else load())
    data = first if is_main() else rest
    if jax.process_count() > 1:
        some = data.train.samples[::max(1, len(data.train.samples) // 997)]
        same_everywhere(data.tok.to_str().encode() + repr((data.report, some)).encode(),
                        "training data (tokenizer, samples)")
    return data


def load_source(cfg: TrainConfig, source) -> dict:
    """The weights of the run `cfg` starts from (its best checkpoint, else its newest), checked
    against cfg's model: only dropout may differ."""
    from .checkpoints import load_for_inference
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


def open_run(cfg: TrainConfig, options: TrainOptions, report: Reporter) -> tuple[Run, LoopState]:
    """Check the run directory, load the data, create the TrainState on the mesh (restored,
    and re-split for this mesh, when resuming; from another run's weights with init_from)
    and the jitted steps."""
    out, data_dir, resume = Path(options.out), options.data_dir, options.resume
    mesh = open_mesh(cfg, options.mesh)
    notes = []
    if options.fit_vocab_to_data:
        together("prepare the data", main_only(ensure_prepared, data_dir, cfg.model.vocab_size, report.quiet))
        cfg, note = fit_vocab(cfg, data_dir)
        notes += [note] if note else []
    check_run_dir(cfg, out, resume, options.force)
    saved = saved_run(out) if resume else {}
    # a run started from another run's weights reads its data with that run's tokenizer
    init_from = saved.get("init_from") if resume else options.init_from
    tokenizer = None
    if init_from is not None:
        tokenizer = out / "tokenizer.json" if resume else Path(init_from) / "tokenizer.json"
    source_params = load_source(cfg, init_from) if init_from is not None and not resume else None
    data = open_data(cfg, data_dir, report.quiet, tokenizer, mesh)
    notes += list(data.notes)
    together("fit in memory", lambda: check_train_fits(cfg.model, cfg.batch_size, data.report["seq_len"],
                                                        jax.local_devices()[0]))
    if resume and init_from is None:
        together("check the run's tokenizer and data", main_only(check_identity, out, saved, data, data_dir, report))
    tokenizer = tokenizer or Path(data_dir) / "tokenizer.json"
    identity = {key: saved[key] for key in ("tokenizer_digest", "data_digest", "init_from") if key in saved}
    if not resume:
        identity = {"tokenizer_digest": data.tokenizer_digest, "data_digest": data.digest,
                    **({"init_from": str(init_from)} if init_from is not None else {})}
    together("write config.json", main_only(write_run_config, out, cfg, options.preset, tokenizer,
                                            copy_tokenizer=not resume, identity=identity))
    dtype = compute_dtype(cfg.dtype)
    root = jax.random.key(cfg.seed)
    scaler = LossScale.create() if needs_loss_scaling(cfg.dtype) else None
    params = source_params if source_params is not None else init_params(cfg.model, jax.random.fold_in(root, 0))
    state = place_state(create_state(cfg.model, cfg.optim, params, dtype, scaler), mesh)
    ckpts = RunCheckpoints(out, cfg.keep_checkpoints)
    loop = LoopState(state)
    if resume:
        restore(ckpts, loop, data, out, report)
    start_step = int(loop.state.step)
    loop.last_good_step = start_step
    metrics = MetricsLog(out / "metrics.jsonl", keep_until_step=start_step if resume else None, enabled=is_main())
    for note in metrics.notes:
        report.note(note)
    run = Run(cfg, out, options.preset, data, ckpts, metrics, make_train_step(cfg.steps_per_call),
              make_eval_step(GuppyLM(cfg.model, dtype).apply), jax.random.fold_in(root, 1), start_step, mesh,
              report, tuple(notes))
    moment("run.opened")
    return run, loop


# ----------------------------------------------------------------------------- loop
def read_metrics(run: Run, loop: LoopState, meter: Throughput) -> None:
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
        run.report.step(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.1e}", tok_s=f"{tps:,.0f}", **shown)
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


def evaluate(run: Run, loop: LoopState, step: int) -> None:
    """Held-out loss; a new best is saved in best/."""
    eval_loss = mean_eval_loss(run.eval_fn, loop.state.params, run.data.eval.one_pass(),
                               run.cfg.eval_batches)
    run.metrics.write({"step": step, "eval_loss": eval_loss})
    run.report.say(f"step {step}: eval loss {eval_loss:.4f}" + (" (best)" if eval_loss < loop.best_eval else ""))
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


def check_first_batch(batch: dict) -> None:
    if not np.any(batch["loss_mask"]):
        raise ConfigError(f"the first batch holds no token to predict (rows of {batch['loss_mask'].shape[1]} "
                          f"tokens): nothing would be learned; use a longer --seq-len, or data with "
                          f"conversations of two tokens or more")


def run_loop(run: Run, loop: LoopState, end_step: int, stop: StopOnSignal) -> None:
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
        if loop.non_pad_share is None:  # of the rows this process filled
            rows = run.data.train.rows or slice(None)
            first = {name: x[rows] for name, x in chunk[0].items()}
            check_first_batch(first)
            loop.non_pad_share = non_pad_share(first)
        batch = place_batch(chunk[0] if k == 1 else stack_batches(chunk), run.mesh, stacked=k > 1)
        loop.state, metrics = run.step_fn(loop.state, batch, run.dropout_rng)
        loop.call_lengths.add(n)
        if loop.pending is not None:
            read_metrics(run, loop, meter)
        loop.pending = (step + 1, metrics)
        if step == run.start_step:  # the first call includes compilation: time tokens/s after it
            jax.block_until_ready(metrics)
            meter.reset()
        step += n
        if step % cfg.eval_every == 0 or step == cfg.optim.steps:
            read_metrics(run, loop, meter)
            evaluate(run, loop, step)
        if step % cfg.checkpoint_every == 0:
            if loop.pending is not None:
                read_metrics(run, loop, meter)
            save(run, loop)
    if loop.pending is not None:
        read_metrics(run, loop, meter)


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
               "compiles": {"train_step": run.step_fn.traces(), "eval_step": run.eval_fn.traces()},
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
        run.report.note(f"could not write summary.json or loss_curve.png: {err.strerror or err}")
    return summary


def sample_answers(cfg: TrainConfig, params, tok) -> list[tuple[str, str]]:
    """The fish answers a few prompts with the weights it has now (process 0 gets them; every
    process takes part in gathering the weights)."""
    from ..core.generate import default_answer_len, generate
    from ..core.tokenizer import decode, encode, format_prompt
    params = to_host(params)
    if not is_main():
        return []
    moment("samples.start")
    prompts = [encode(tok, format_prompt(p)) for p in SAMPLE_PROMPTS]
    answers = generate(cfg.model, params, prompts, jax.random.key(cfg.seed),
                       max_new_tokens=default_answer_len(cfg.model))
    return [(p, decode(tok, a)) for p, a in zip(SAMPLE_PROMPTS, answers)]


def start_line(run: Run, end_step: int) -> str:
    cfg, report = run.cfg, run.data.report
    return (f"run {run.out}: preset {run.preset}, {cfg.model.num_params():,} params, batch {cfg.batch_size} x "
            f"{report['seq_len']} ({'packed' if cfg.packing else 'padded'}), steps {run.start_step}->{end_step} "
            f"on {describe(run.mesh)} in {cfg.dtype}; {report['train_samples']} train / "
            f"{report['eval_samples']} eval samples" + "".join(f"; {note}" for note in run.notes))


def closing_line(summary: dict, run: Run) -> str:
    lengths = summary["call_lengths"]
    calls = f" (calls of {' and '.join(map(str, lengths))} steps)" if len(lengths) > 1 else ""
    return (f"\n{summary['status']} at step {summary['step']} in {summary['wall_s']:.0f}s; best eval loss "
            f"{summary['best_eval_loss']:.4f}; compiled train step {summary['compiles']['train_step']}x{calls}, "
            f"eval step {summary['compiles']['eval_step']}x; loss curve: {run.out / 'loss_curve.png'}")


def out_of_memory_hint(cfg: TrainConfig) -> str:
    return (f"the device ran out of memory (batch {cfg.batch_size}, {cfg.model.num_params():,} params): try a "
            f"smaller --batch-size (now {cfg.batch_size}) or --steps-per-call, or --no-preallocate so that JAX "
            f"does not take 75% of GPU memory up front; the last checkpoint is kept, continue with --resume")


def train(cfg: TrainConfig, options: TrainOptions = TrainOptions(), report: Reporter | None = None) -> dict:
    """Run (or resume) training; returns the summary written to options.out/summary.json."""
    started = time.perf_counter()
    report = report or Reporter()
    if not is_main():  # with many processes, process 0 speaks for all
        report = Reporter(report.quiet, speaks=False)
    if options.stop_after is not None and options.stop_after <= 0:
        raise ConfigError(f"--stop-after must be at least 1, got {options.stop_after}")
    if options.init_from is not None and options.resume:
        raise ConfigError("--init-from starts a new run; --resume continues one: pass one of them")
    dtype, why = resolve(cfg.dtype, jax.devices()[0])
    report.say(f"precision: {dtype} ({why})")
    cfg = cfg.replace(dtype=dtype)  # the run stores what it computes in
    with ExitStack() as held, StopOnSignal(report.quiet) as stop:
        together("open the run directory", main_only(lambda: held.enter_context(locked_run_dir(options.out))))
        run, loop = open_run(cfg, options, report)
        summary = train_and_finish(run, loop, options.stop_after, stop, started)
    if loop.status == "interrupted":
        report.say(f"interrupted: saved step {summary['step']} to {run.out / 'checkpoints'}; continue with --resume")
    if options.show_samples and not report.quiet and loop.status == "finished":
        try:
            with EndOnSignal():  # every process takes part in gathering the weights
                answers = sample_answers(run.cfg, loop.state.params, run.data.tok)
            if answers:
                report.say("\nwhat the model says now:\n" + "\n".join(f"  You> {p}\n  Guppy> {a}" for p, a in answers))
        except KeyboardInterrupt:
            report.say("\n(samples skipped; the run is saved)")
            summary["samples_interrupted"] = True
    report.say(closing_line(summary, run))
    return summary


def train_and_finish(run: Run, loop: LoopState, stop_after, stop: StopOnSignal, started: float) -> dict:
    """The loop with its progress bar, then `finish`; a non-finite loss or a failed save
    ends in a TrainError that says what is kept."""
    cfg, total, report = run.cfg, run.cfg.optim.steps, run.report
    end_step = total if stop_after is None else min(total, run.start_step + stop_after)
    report.say(start_line(run, end_step))
    if run.data.report["truncated"] or run.data.report["dropped"]:
        report.say(f"note: {run.data.report['truncated']} samples truncated and {run.data.report['dropped']} "
                   f"dropped (longer than {cfg.model.max_seq_len} tokens, or under 2)")
    report.start_progress(total, run.start_step)
    failure = None
    try:
        run_loop(run, loop, end_step, stop)
    except FloatingPointError as err:
        loop.status = "non-finite"
        kept = run.ckpts.latest_step()
        report.end_progress()
        report.error(f"{err}. Stopped; " + (f"the last saved checkpoint (step {kept}) in {run.out / 'checkpoints'} "
                     f"is untouched." if kept is not None else "no checkpoint had been saved yet."))
    except (CheckpointSaveError, WriteError) as err:
        loop.status, failure = "save-failed", str(err)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        loop.status, failure = "out-of-memory", out_of_memory_hint(run.cfg)
    finally:
        report.end_progress()
    try:
        summary = finish(run, loop, started)
    except (CheckpointSaveError, WriteError) as err:
        raise TrainError(str(err)) from None
    if loop.status == "non-finite":
        raise TrainError("training stopped: non-finite loss (see above)")
    if failure:
        raise TrainError(failure)
    return summary
