"""What a training run tells the person who started it, and how they stop it.

`Reporter` owns every line the loop prints and its progress bar: the loop calls it and
never prints itself. A quiet reporter keeps the notes and errors (stderr) and drops the
chatter and the bar; with many processes only process 0's reporter speaks.

`StopOnSignal` turns Ctrl-C, SIGTERM and SIGHUP into a flag the loop reads between calls;
`EndOnSignal` lets them end the closing samples, when nothing is left to save.
"""
from __future__ import annotations

import signal
import sys
import threading
import time


class Reporter:
    def __init__(self, quiet: bool = False, speaks: bool = True):
        self.quiet, self.speaks = quiet, speaks
        self.bar = None

    @property
    def chatty(self) -> bool:
        return self.speaks and not self.quiet

    def say(self, text: str) -> None:
        """A line of the run's story (the start line, the closing line); not when quiet."""
        if self.chatty:
            print(text, flush=True) if self.bar is None else self.bar.write(text)

    def note(self, text: str) -> None:
        """Something the user should know even when quiet (a fallback taken, a file restored)."""
        if self.speaks:
            print(f"note: {text}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        if self.speaks:
            print(f"error: {text}", file=sys.stderr, flush=True)

    def start_progress(self, total: int, initial: int) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, disable=not self.chatty, unit="step", dynamic_ncols=True)

    def step(self, **shown) -> None:
        """One step done; `shown` goes beside the bar (loss, lr, tokens/s)."""
        if self.bar is not None:
            self.bar.set_postfix(**shown, refresh=False)
            self.bar.update(1)

    def end_progress(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


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


class _Handlers:
    """Installs `handle` for SIGNALS while in the `with` block (signals reach the main
    thread only; elsewhere it does nothing)."""
    SIGNALS: tuple = ()

    def handle(self, signum, frame):
        raise NotImplementedError

    def __enter__(self):
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


class StopOnSignal(_Handlers):
    """Ctrl-C, SIGTERM (Colab, cloud preemption, `timeout`) and SIGHUP set `requested`; the
    loop stops between calls and saves. A signal never interrupts a save: a second one only
    repeats that the run is stopping."""
    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, quiet: bool = False):
        self.requested, self.quiet = False, quiet

    def handle(self, signum, frame):
        if not self.quiet or self.requested:
            what = "still saving, please wait" if self.requested else "stopping: saving a checkpoint first"
            print(f"\n{signal.Signals(signum).name}: {what}", file=sys.stderr, flush=True)
        self.requested = True


class EndOnSignal(_Handlers):
    """After the last save nothing is left to save: SIGTERM and SIGHUP end what still runs
    (the closing samples) the way Ctrl-C does, so the command exits 130 with a word rather
    than dying silently with 143."""
    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def handle(self, signum, frame):
        raise KeyboardInterrupt
