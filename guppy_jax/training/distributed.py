"""Many machines: one `python -m guppy_jax.train` per machine, joined by JAX's own
multi-process runtime (`jax.distributed`, the one TPU pods and GPU clusters use).

Every process runs the same program. After `initialize`, `jax.devices()` lists the devices
of all processes, the mesh spans them all, and one jitted step runs across them (on CPU the
cross-process sums go over gloo, which the jaxlib wheel has). Who does what:

    every process   lays out the same global batches in the same order (same seed, same data
                    position, from the conversations' lengths alone), reads from the shared
                    token store only the rows its own devices hold and copies them there
                    (`global_batch`), runs the step, evaluates, and takes part in every
                    checkpoint save and restore (orbax writes each process's share)
    process 0       prepares missing data, holds the run lock, writes config.json,
                    metrics.jsonl, summary.json, the loss curve, prints the progress bar
                    and the samples

A stop (Ctrl-C, SIGTERM) on any process stops all of them at the same step (`any_process`,
one small all-gather per call), so that they all save the same checkpoint. A step that can
fail in one process alone (a missing data directory, a locked run) is run `together`: if it
fails anywhere, every process stops with an error instead of waiting for the one that gave
up. Every process must read the same data: a digest of the tokenizer and of the first
batches is compared across processes at the start (`same_everywhere`).

Settings come from flags or the environment, flags first:

    --coordinator HOST:PORT   JAX_COORDINATOR_ADDRESS   process 0's address, the same for all
    --num-processes N         JAX_NUM_PROCESSES
    --process-id I            JAX_PROCESS_ID            0 .. N-1, one per process

On a cluster JAX detects itself (SLURM, Open MPI, Kubernetes, Cloud TPU), `--distributed`
alone lets `jax.distributed.initialize` find the rest.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import jax
import numpy as np

__all__ = ["DistributedError", "JoinError", "Settings", "settings", "initialize", "is_main", "process_count", "barrier",
           "any_process", "together", "same_everywhere", "global_batch", "to_host"]

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
    `timeout_s` for all of them to arrive at the coordinator. On CPU the cross-process sums
    go over gloo (older jax versions default to none)."""
    if "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(how.coordinator, how.num_processes, how.process_id,
                                   initialization_timeout=timeout_s)
    except Exception as err:  # a coordinator that never answers, a port in use, no cluster found...
        text = " ".join(str(err).split())[:300]
        where = (f"at {how.coordinator} as process {how.process_id} of {how.num_processes}" if how.coordinator
                 else "through JAX's cluster detection (--distributed; pass the three flags if there is no cluster)")
        raise JoinError(f"could not join the other processes {where}: {text}") from None


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


def main_only(fn, *args, **kwargs):
    """A step for `together` that runs fn(*args, **kwargs) in process 0 alone (None elsewhere):
    writing a file, clearing a directory, printing."""
    return lambda: fn(*args, **kwargs) if is_main() else None


def together(what: str, step) -> object:
    """Run `step()` in every process (a step for process 0 alone returns early elsewhere),
    then agree: when it failed anywhere, every process raises, so none is left waiting at
    the next collective for one that gave up. Returns what `step` returned."""
    try:
        result, failure = step(), None
    except Exception as err:
        result, failure = None, err
    if any_process(failure is not None):
        if failure is not None:
            raise failure
        raise DistributedError(f"another process failed to {what} (its own output says why)")
    return result


def same_everywhere(fingerprint: bytes, what: str) -> None:
    """Raise in every process unless all of them hold the same `fingerprint` (a digest)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    mine = np.frombuffer(hashlib.sha256(fingerprint).digest()[:16], np.uint32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
    if not (every == every[0]).all():
        raise DistributedError(f"the processes do not all have the same {what}: give every process the "
                               f"same files (a shared path, or identical copies)")


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
