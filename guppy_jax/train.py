"""Train GuppyLM: `python -m guppy_jax.train`.

With no arguments it picks a preset for the machine (guppy-9m on a GPU, cpu otherwise),
prepares the Guppy data and tokenizer if they are missing, trains with a progress bar,
evaluates, checkpoints, draws the loss curve and lets the fish answer a few prompts.
`--resume` continues a run from its latest checkpoint, bit for bit; Ctrl-C saves first.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, ModelConfig, OptimConfig, TrainConfig
from .prepare import DEFAULT_OUT as DEFAULT_DATA

PROMPTS = ["hi guppy", "what is the meaning of life", "are you hungry", "do you like the cat",
           "what do you think about money"]


class TrainError(RuntimeError):
    """A run that cannot start or cannot go on, with the reason."""


# ----------------------------------------------------------------------------- command line
def _add_fields(parser, cls, skip=()):
    group = parser.add_argument_group(f"{cls.__name__} overrides (default: the preset's)")
    for f in dataclasses.fields(cls):
        if f.name in skip or f.type in ("ModelConfig", "OptimConfig"):
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", f"{cls.__name__}.{f.name}")
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, type=type(f.default), default=None, metavar=f.name.upper(),
                               help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m guppy_jax.train", description=__doc__.split("\n\n")[1].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="guppy-9m: the original recipe; cpu: <= 10 min on 2 cores; tiny: tests. "
                             "Default: guppy-9m when JAX sees a GPU, else cpu")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA),
                        help="directory with train.jsonl, eval.jsonl and tokenizer.json; the default "
                             "one is generated from the Guppy persona when missing")
    parser.add_argument("--out", default="runs/guppy", help="run directory for checkpoints and logs")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop (with a checkpoint) after N steps of this invocation; --resume goes on")
    parser.add_argument("--no-preallocate", action="store_true",
                        help="GPU: allocate memory as needed instead of grabbing 75%% up front")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_fields(parser, TrainConfig)
    _add_fields(parser, OptimConfig)
    _add_fields(parser, ModelConfig, skip=("pad_id", "bos_id", "eos_id"))
    return parser


def resolve_config(args, backend: str) -> tuple[str, TrainConfig, str]:
    """(preset name, config with the flags applied, a line announcing an automatic choice)."""
    note = ""
    preset = args.preset
    if preset is None:
        preset = "cpu" if backend == "cpu" else "guppy-9m"
        note = (f"JAX sees no accelerator: using the 'cpu' preset (about 10 minutes on 2 cores). "
                f"Pass --preset guppy-9m for the original recipe." if backend == "cpu" else
                f"JAX sees a {backend.upper()}: using the 'guppy-9m' preset (the original recipe).")
    cfg = PRESETS[preset]
    vals = vars(args)

    def overrides(cls):
        return {f.name: vals[f.name] for f in dataclasses.fields(cls)
                if f.name in vals and vals[f.name] is not None}
    model = cfg.model.replace(**overrides(ModelConfig))
    optim = dataclasses.replace(cfg.optim, **overrides(OptimConfig))
    loop = {k: v for k, v in overrides(TrainConfig).items() if k not in ("model", "optim")}
    return preset, cfg.replace(model=model, optim=optim, **loop), note


# ----------------------------------------------------------------------------- data
def load_data(cfg: TrainConfig, data_dir: Path, quiet: bool):
    """(tokenizer, train Batches, eval Batches, report dict); fails early on missing files."""
    from .data import Batches, encode_texts, load_texts, padded_row_len
    from .prepare import prepare
    from .tokenizer import load_tokenizer

    data_dir = Path(data_dir)
    if not (data_dir / "train.jsonl").exists():
        if data_dir.resolve() != DEFAULT_DATA.resolve():
            raise TrainError(f"missing data file {data_dir / 'train.jsonl'} (prepare it with "
                             f"`python -m guppy_jax.prepare --out {data_dir}`)")
        print(f"no data in {data_dir}: generating the Guppy dataset and tokenizer first")
        prepare(out=data_dir, vocab_size=cfg.model.vocab_size, quiet=quiet)
    for name in ("eval.jsonl", "tokenizer.json"):
        if not (data_dir / name).exists():
            raise TrainError(f"missing data file {data_dir / name}")
    tok = load_tokenizer(data_dir / "tokenizer.json")
    if tok.get_vocab_size() > cfg.model.vocab_size:
        raise TrainError(f"the tokenizer has {tok.get_vocab_size()} ids but the model's vocab_size is "
                         f"{cfg.model.vocab_size}: pass --vocab-size {tok.get_vocab_size()} or larger")
    max_len = cfg.model.max_seq_len
    train = encode_texts(tok, load_texts(data_dir / "train.jsonl"), max_len)
    held = encode_texts(tok, load_texts(data_dir / "eval.jsonl"), max_len)
    seq_len = cfg.seq_len
    if seq_len == 0:
        seq_len = max_len if cfg.packing else padded_row_len(train.samples + held.samples, max_len)
    try:
        train_batches = Batches(train.samples, cfg.batch_size, seq_len, cfg.packing, seed=cfg.seed)
        eval_batches = Batches(held.samples, cfg.batch_size, seq_len, cfg.packing, shuffle=False)
    except ValueError as err:
        raise TrainError(str(err)) from None
    report = {"train_samples": len(train.samples), "eval_samples": len(held.samples),
              "truncated": train.truncated + held.truncated, "dropped": train.dropped + held.dropped,
              "seq_len": seq_len}
    return tok, train_batches, eval_batches, report


# ----------------------------------------------------------------------------- the run
def _check_writable(out: Path):
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainError(f"cannot write to the output directory {out}: {err.strerror or err}") from None


def train(cfg: TrainConfig, out, data_dir=DEFAULT_DATA, resume: bool = False, preset: str = "custom",
          stop_after: int | None = None, quiet: bool = False, show_samples: bool = True) -> dict:
    """Run (or resume) training; returns the summary written to out/summary.json."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .checkpoint import RunCheckpoints, config_differences, read_run_config, write_run_config
    from .data import mean_eval_loss, non_pad_share
    from .model import init_params
    from .plots import plot_losses
    from .steps import create_state, eval_step, train_step, train_steps

    out = Path(out)
    started = time.perf_counter()
    k = cfg.steps_per_call
    if stop_after is not None and (stop_after <= 0 or stop_after % k):
        raise TrainError(f"--stop-after ({stop_after}) must be a positive multiple of steps_per_call ({k})")
    if resume:
        saved = read_run_config(out)
        diffs = config_differences(saved, cfg)
        if diffs:
            raise TrainError(f"{out} holds a run with a different config; refusing to resume:\n  "
                             + "\n  ".join(diffs))
    elif (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise TrainError(f"{out} already holds checkpoints: pass --resume to continue that run, "
                         f"or choose another --out")
    _check_writable(out)
    tok, batches, eval_batches, data_report = load_data(cfg, data_dir, quiet)
    write_run_config(out, cfg, preset, Path(data_dir) / "tokenizer.json")

    dtype = jnp.bfloat16 if cfg.dtype == "bfloat16" else jnp.float32
    root = jax.random.key(cfg.seed)
    state = create_state(cfg.model, cfg.optim, init_params(cfg.model, jax.random.fold_in(root, 0)), dtype)
    dropout_rng = jax.random.fold_in(root, 1)
    ckpts = RunCheckpoints(out, cfg.keep_checkpoints)
    best_eval = math.inf
    if resume:
        state, meta = ckpts.restore(state)
        batches.seek(meta["data_position"])
        best_eval = meta.get("best_eval", math.inf)
    start_step = int(state.step)

    # Fresh functions per run, so that their compile counts (reported in the summary and
    # checked by the tests) are this run's alone, not the process's.
    def run_train_step(state, batch, rng):
        return train_step(state, batch, rng)

    def run_train_steps(state, batches, rng):
        return train_steps(state, batches, rng)

    def run_eval_step(state, batch):
        return eval_step(state, batch)
    step_fn = jax.jit(run_train_step if k == 1 else run_train_steps, donate_argnums=0)
    eval_fn = jax.jit(run_eval_step)
    metrics_path = out / "metrics.jsonl"
    kept = []
    if resume and metrics_path.exists():  # drop lines past the checkpoint: they are redone now
        kept = [line for line in metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= start_step]
    metrics_log = open(metrics_path, "w")
    metrics_log.writelines(line + "\n" for line in kept)

    def log(record):
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.flush()

    def evaluate():
        return mean_eval_loss(eval_fn, state, eval_batches.one_pass(), cfg.eval_batches)

    def meta():
        return {"data_position": batches.position, "best_eval": best_eval}

    stop = {"signal": False}

    def on_sigint(signum, frame):
        stop["signal"] = True
    previous_handler = signal.signal(signal.SIGINT, on_sigint)

    total = cfg.optim.steps
    end_step = total if stop_after is None else min(total, start_step + stop_after)
    from tqdm import tqdm
    bar = tqdm(total=total, initial=start_step, disable=quiet, unit="step", dynamic_ncols=True)
    if not quiet:
        print(f"run {out}: preset {preset}, {cfg.model.num_params():,} params, batch {cfg.batch_size} x "
              f"{data_report['seq_len']} ({'packed' if cfg.packing else 'padded'}), steps {start_step}->{end_step} "
              f"on {jax.default_backend()}; {data_report['train_samples']} train / "
              f"{data_report['eval_samples']} eval samples", flush=True)
        if data_report["truncated"] or data_report["dropped"]:
            print(f"note: {data_report['truncated']} samples truncated and {data_report['dropped']} dropped "
                  f"(longer than {cfg.model.max_seq_len} tokens, or under 2)")
    pending, last_good_step, status = None, start_step, "finished"
    window_tokens, window_start = 0.0, time.perf_counter()
    fill = []

    def settle(record):
        """Host-side handling of one call's metrics (called a call late)."""
        nonlocal window_tokens
        first_step, metrics = record
        got = {key: np.atleast_1d(np.asarray(v, np.float64)) for key, v in jax.device_get(metrics).items()}
        for j in range(len(got["loss"])):
            step_no = first_step + j
            m = {key: float(v[j]) for key, v in got.items()}
            if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
                raise FloatingPointError(f"non-finite loss at step {step_no} (loss {m['loss']}, grad norm "
                                         f"{m['grad_norm']})")
            window_tokens += m["tokens"]
            elapsed = time.perf_counter() - window_start
            tps = window_tokens / elapsed if elapsed > 0 else 0.0
            log({"step": step_no, "loss": m["loss"], "lr": m["lr"], "grad_norm": m["grad_norm"],
                 "tokens_per_s": tps})
            bar.set_postfix(loss=f"{m['loss']:.3f}", lr=f"{m['lr']:.1e}", tok_s=f"{tps:,.0f}", refresh=False)
            bar.update(1)

    try:
        for step in range(start_step, end_step, k):
            if stop["signal"]:
                status = "interrupted"
                break
            chunk = [next(batches) for _ in range(k)]
            if step == start_step:
                fill.append(non_pad_share(chunk[0]))
            batch = chunk[0] if k == 1 else {key: np.stack([b[key] for b in chunk]) for key in chunk[0]}
            state, metrics = step_fn(state, batch, dropout_rng)
            if pending is not None:
                settle(pending)
                last_good_step = pending[0] + k - 1
            pending = (step + 1, metrics)
            if step == start_step:  # the first call includes compilation: time tokens/s after it
                jax.block_until_ready(metrics)
                window_tokens, window_start = 0.0, time.perf_counter()
            done = step + k
            if done % cfg.eval_every == 0 or done == total:
                settle(pending)
                last_good_step, pending = done, None
                eval_loss = evaluate()
                log({"step": done, "eval_loss": eval_loss})
                if not quiet:
                    bar.write(f"step {done}: eval loss {eval_loss:.4f}" +
                              (" (best)" if eval_loss < best_eval else ""))
                if eval_loss < best_eval:
                    best_eval = eval_loss
                    ckpts.save(state, meta(), best=True)
            if done % cfg.checkpoint_every == 0:
                if pending is not None:
                    settle(pending)
                    last_good_step, pending = done, None
                ckpts.save(state, meta())
        if pending is not None:
            settle(pending)
            last_good_step, pending = pending[0] + k - 1, None
    except FloatingPointError as err:
        status = "non-finite"
        bar.close()
        print(f"error: {err}. Stopped; the last saved checkpoint in {out / 'checkpoints'} is untouched.",
              file=sys.stderr)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    bar.close()
    if status != "non-finite":
        if pending is not None:
            settle(pending)
        ckpts.save(state, meta())
        if status == "interrupted":
            print(f"interrupted: saved step {int(state.step)} to {out / 'checkpoints'}; "
                  f"continue with --resume", flush=True)
    ckpts.close()
    metrics_log.close()

    summary = {"preset": preset, "status": status, "step": int(state.step) if status != "non-finite" else last_good_step,
               "wall_s": time.perf_counter() - started, "best_eval_loss": best_eval,
               "compiles": {"train_step": step_fn._cache_size(), "eval_step": eval_fn._cache_size()},
               "non_pad_share": fill[0] if fill else None, "params": cfg.model.num_params(),
               "backend": jax.default_backend(), **data_report}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_losses(out / "metrics.jsonl", out / "loss_curve.png")
    if status == "non-finite":
        raise TrainError(f"training stopped: non-finite loss (see above)")
    if show_samples and status == "finished":
        from .chat import default_answer_len
        from .generate import generate
        from .tokenizer import decode, encode, format_prompt
        prompts = [encode(tok, format_prompt(p)) for p in PROMPTS]
        answers = generate(cfg.model, state.params, prompts, jax.random.key(cfg.seed),
                           max_new_tokens=default_answer_len(cfg.model))
        print("\nwhat the model says now:")
        for p, a in zip(PROMPTS, answers):
            print(f"  You> {p}\n  Guppy> {decode(tok, a)}")
    if not quiet:
        print(f"\n{status} at step {summary['step']} in {summary['wall_s']:.0f}s; best eval loss "
              f"{best_eval:.4f}; compiled train step {summary['compiles']['train_step']}x, eval step "
              f"{summary['compiles']['eval_step']}x; loss curve: {out / 'loss_curve.png'}")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_preallocate:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # read when the backend starts
    import jax
    try:
        preset, cfg, note = resolve_config(args, jax.default_backend())
    except (ConfigError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if note:
        print(note)
    try:
        summary = train(cfg, args.out, args.data_dir, args.resume, preset, args.stop_after, args.quiet)
    except (TrainError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 130 if summary["status"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
