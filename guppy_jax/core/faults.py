"""Named moments at which a test can kill this process: fault injection that hits the moment
it names instead of sleeping and hoping.

The library calls `moment("metrics.write")` (say) where a crash would matter. Two environment
variables, read by tests only, act on those calls:

    GUPPY_KILL_AT=NAME[:N]   the Nth arrival (default: the first) at moment NAME sends this
                             process SIGKILL, as `kill -9` or a power cut would
    GUPPY_MOMENTS=FILE       every arrival appends "NAME N" to FILE, so a test can list the
                             moments a command passes through and then kill it at each

Without them a moment costs one environment lookup.
"""
from __future__ import annotations

import os
import signal

_arrivals: dict[str, int] = {}


def moment(name: str) -> None:
    """Mark a named moment (see the module docstring); a no-op unless a test asked for it."""
    trace, kill_at = os.environ.get("GUPPY_MOMENTS"), os.environ.get("GUPPY_KILL_AT")
    if not (trace or kill_at):
        return
    count = _arrivals[name] = _arrivals.get(name, 0) + 1
    if trace:
        with open(trace, "a") as f:
            f.write(f"{name} {count}\n")
    if kill_at:
        target, _, nth = kill_at.partition(":")
        if target == name and count == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
