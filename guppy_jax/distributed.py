"""Many machines: one `python -m guppy_jax.train` per machine, joined by JAX's own
multi-process runtime (`jax.distributed`, the one TPU pods and GPU clusters use).

Every process runs the same program. After `initialize`, `jax.devices()` lists the devices
of all processes, the mesh spans them all, and one jitted step runs across them (on CPU the
cross-process sums go over gloo, which the jaxlib wheel has). Who does what:

    every process   reads the same global batches in the same order (same seed, same data
                    position), copies to its own devices only the rows they hold
                    (`global_batch`), runs the step, evaluates, and takes part in every
                    checkpoint save and restore (orbax writes each process's share)
    process 0       prepares missing data, holds the run lock, writes config.json,
                    metrics.jsonl, summary.json, the loss curve, prints the progress bar
                    and the samples

A stop (Ctrl-C, SIGTERM) on any process stops all of them at the same step (`any_process`),
so that they all save the same checkpoint.

Settings come from flags or the environment, flags first:

    --coordinator HOST:PORT   JAX_COORDINATOR_ADDRESS   process 0's address, the same for all
    --num-processes N         JAX_NUM_PROCESSES
    --process-id I            JAX_PROCESS_ID            0 .. N-1, one per process

On a cluster JAX detects itself (SLURM, Open MPI, Kubernetes, Cloud TPU), `--distributed`
alone lets `jax.distributed.initialize` find the rest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import jax
import numpy as np

__all__ = ["DistributedError", "JoinError", "Settings", "settings", "initialize", "is_main", "process_count", "barrier",
           "any_process", "global_batch", "to_host"]

ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}


class DistributedError(ValueError):
    """Multi-process settings that cannot work, with what to change."""


class JoinError(RuntimeError):
    """The processes could not find each other."""


@dataclass(frozen=True)
class Settings:
    coordinator: str | None
    num_processes: int | None
    process_id: int | None


def _number(value, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"{name} must be a whole number, got {value!r}") from None


def settings(coordinator=None, num_processes=None, process_id=None, auto: bool = False,
             environ=None) -> Settings | None:
    """The multi-process settings from flags, then the environment; None for one process.
    Half-given settings are an error (which ones are missing), unless `auto` lets JAX's
    cluster detection fill them."""
    environ = os.environ if environ is None else environ
    got = Settings(coordinator or environ.get(ENV["coordinator"]) or None,
                   _number(num_processes if num_processes is not None else environ.get(ENV["num_processes"]),
                           "--num-processes / " + ENV["num_processes"]),
                   _number(process_id if process_id is not None else environ.get(ENV["process_id"]),
                           "--process-id / " + ENV["process_id"]))
    given = [v is not None for v in (got.coordinator, got.num_processes, got.process_id)]
    if not any(given) and not auto:
        return None
    if not all(given) and not auto:
        missing = [f"--{name.replace('_', '-')} (or {ENV[name]})" for name, ok in zip(ENV, given) if not ok]
        raise DistributedError("a multi-process run needs --coordinator, --num-processes and --process-id; "
                               f"missing: {', '.join(missing)} (or pass --distributed on a cluster JAX "
                               f"detects by itself)")
    if got.num_processes is not None and got.num_processes < 1:
        raise DistributedError(f"--num-processes must be at least 1, got {got.num_processes}")
    if got.process_id is not None and got.num_processes is not None and not 0 <= got.process_id < got.num_processes:
        raise DistributedError(f"--process-id must be 0 .. {got.num_processes - 1} for {got.num_processes} "
                               f"processes, got {got.process_id}")
    if got.coordinator is not None and ":" not in got.coordinator:
        raise DistributedError(f"--coordinator must be HOST:PORT (process 0's address), got {got.coordinator!r}")
    return got


def initialize(how: Settings, timeout_s: int = 120) -> None:
    """Join the other processes (before anything starts a JAX backend). Waits up to
    `timeout_s` for all of them to arrive at the coordinator."""
    try:
        jax.distributed.initialize(how.coordinator, how.num_processes, how.process_id,
                                   initialization_timeout=timeout_s)
    except Exception as err:  # a coordinator that never answers, a port in use, ...
        text = " ".join(str(err).split())[:300]
        raise JoinError(f"could not join the other processes at {how.coordinator} as process "
                               f"{how.process_id} of {how.num_processes}: {text}") from None


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """True in process 0, the one that writes logs and prints."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when `flag` is true on any of them."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.array(flag))))


def global_batch(batch: dict, sharding) -> dict:
    """Arrays on `sharding` from a global batch every process holds alike: each process
    copies to its own devices only the rows they keep."""
    return {name: jax.make_array_from_callback(np.shape(x), sharding, lambda index, x=x: np.asarray(x)[index])
            for name, x in batch.items()}


def to_host(tree):
    """Every array of `tree` whole on this host, even when it is split across processes."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
