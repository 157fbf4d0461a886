"""Train GuppyLM: `python -m guppy_jax.train`.

With no arguments it picks a preset for the machine (guppy-9m on a GPU, cpu otherwise),
prepares the Guppy data and tokenizer if they are missing, trains with a progress bar,
evaluates, checkpoints, draws the loss curve and lets the fish answer a few prompts.
`--resume` continues a run from its latest checkpoint, bit for bit, on the run's own config;
`--init-from RUN` starts a new run from another run's weights (an imported original, say).
Ctrl-C saves first.
With several devices it trains data parallel on all of them (--mesh to choose); with
--coordinator/--num-processes/--process-id, one such command per machine trains as one
run (see README, "Scaling out").
"""
from __future__ import annotations

import os

from . import cli
from .training.checkpoints import CheckpointError, read_run_config
from .core.config import PRESETS, ConfigError, ModelConfig, OptimConfig, TrainConfig
from .training.loop import TrainError, TrainOptions, train
from .training.report import Reporter
from .training.run_dir import saved_run

__all__ = ["build_parser", "resolve_config", "main"]


def build_parser():
    parser = cli.make_parser("train", __doc__)
    cli.add_preset(parser, PRESETS, "guppy-9m: the original recipe; cpu: 5-7 min on 2 cores; tiny: "
                                    "tests. Default: guppy-9m when JAX sees a GPU, else cpu; with --resume "
                                    "or --init-from, that run's own config")
    cli.add_data_dir(parser)
    cli.add_run_dir(parser, "run directory for checkpoints and logs", "--out")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --run-dir from its newest readable checkpoint, with the "
                             "config it was started with (flags may change only the eval/checkpoint cadence)")
    parser.add_argument("--init-from", metavar="RUN",
                        help="start a new run from the weights of the run directory RUN (its best checkpoint, "
                             "else its newest), with RUN's model, tokenizer and recipe, a fresh optimizer and "
                             "schedule: fine-tuning, e.g. of `convert import best_model.pt --run-dir RUN`. "
                             "--data-dir's texts are read with RUN's tokenizer")
    parser.add_argument("--force", action="store_true",
                        help="start over in a --run-dir that holds a run: deletes its checkpoints and logs")
    parser.add_argument("--stop-after", type=int, default=None, metavar="N",
                        help="stop (with a checkpoint) after N steps of this invocation; --resume goes on")
    parser.add_argument("--mesh", metavar="SPEC",
                        help="how to use the devices JAX sees, as data=N,fsdp=M (default: data parallel over "
                             "all of them; fsdp > 1 also splits params and optimizer state)")
    add_distributed_flags(parser)
    parser.add_argument("--no-preallocate", action="store_true",
                        help="GPU: allocate memory as needed instead of grabbing 75%% up front")
    cli.add_quiet(parser)
    cli.add_config_fields(parser, TrainConfig)
    cli.add_config_fields(parser, OptimConfig)
    cli.add_config_fields(parser, ModelConfig, skip=("pad_id", "bos_id", "eos_id"))
    return parser


def add_distributed_flags(parser) -> None:
    group = parser.add_argument_group("many machines (jax.distributed; run the same command once per process)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="process 0's address, the same in every process (env JAX_COORDINATOR_ADDRESS)")
    group.add_argument("--num-processes", type=int, metavar="N", help="how many processes (env JAX_NUM_PROCESSES)")
    group.add_argument("--process-id", type=int, metavar="I",
                       help="this process's number, 0 .. N-1; process 0 writes the logs (env JAX_PROCESS_ID)")
    group.add_argument("--distributed", action="store_true",
                       help="join a multi-process run on a cluster JAX detects by itself (SLURM, Open MPI, "
                            "Kubernetes, Cloud TPU), filling what the flags above leave out")


def join_processes(args) -> None:
    """jax.distributed.initialize when the flags or environment ask for many processes."""
    from .training.distributed import initialize, settings
    how = settings(args.coordinator, args.num_processes, args.process_id, auto=args.distributed)
    if how is not None:
        initialize(how)


def resolve_config(args, backend: str) -> tuple[str, TrainConfig, str]:
    """(preset name, config with the flags applied, a line announcing an automatic choice).
    The base is --preset when given; else, with --resume or --init-from, that run's own
    config.json (so no flag needs repeating); else the preset for this machine."""
    note = ""
    preset = args.preset
    own = args.init_from or (args.run_dir if args.resume else None)
    saved = saved_run(own) if own and preset is None else {}
    if saved:
        preset, cfg = saved.get("preset", "custom"), read_run_config(own)
        note = f"using the config of {own} (preset {preset}); flags given on the command line change it"
    else:
        if preset is None:
            preset = "cpu" if backend == "cpu" else "guppy-9m"
            note = ("JAX sees no accelerator: using the 'cpu' preset (5-7 minutes on 2 cores). "
                    "Pass --preset guppy-9m for the original recipe." if backend == "cpu" else
                    f"JAX sees a {backend.upper()}: using the 'guppy-9m' preset (the original recipe).")
        cfg = PRESETS[preset]
        if args.init_from:  # the preset's recipe on the source run's model
            cfg = cfg.replace(model=read_run_config(args.init_from).model)
    model = cfg.model.replace(**cli.overrides(args, ModelConfig))
    optim = cfg.optim.replace(**cli.overrides(args, OptimConfig))
    loop = {k: v for k, v in cli.overrides(args, TrainConfig).items() if k not in ("model", "optim")}
    return preset, cfg.replace(model=model, optim=optim, **loop), note


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_preallocate:
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # read when the backend starts
    import jax
    from .training.distributed import DistributedError, JoinError, is_main
    try:
        join_processes(args)  # before anything starts JAX's backend
        preset, cfg, note = resolve_config(args, jax.default_backend())
    except (ConfigError, TypeError, DistributedError) as err:
        return cli.error(err, cli.EXIT_USAGE)
    except (JoinError, TrainError, CheckpointError) as err:
        return cli.error(err, cli.EXIT_FAILED)
    if note and not args.quiet and is_main():
        print(note)
    # a new run whose vocab the user did not choose fits it to the data's tokenizer
    fit_vocab = "vocab_size" not in cli.overrides(args, ModelConfig) and not (args.resume or args.init_from)
    options = TrainOptions(out=args.run_dir, data_dir=args.data_dir, preset=preset, resume=args.resume,
                           force=args.force, init_from=args.init_from, fit_vocab_to_data=fit_vocab,
                           stop_after=args.stop_after, mesh=args.mesh)
    try:
        summary = train(cfg, options, Reporter(quiet=args.quiet))
    except ConfigError as err:  # e.g. a config that cannot fit in memory
        return cli.error(err, cli.EXIT_USAGE)
    except (TrainError, ValueError, OSError) as err:
        return cli.error(err, cli.EXIT_FAILED)
    stopped = summary["status"] == "interrupted" or summary.get("samples_interrupted")
    return cli.EXIT_INTERRUPTED if stopped else cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
