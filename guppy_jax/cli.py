"""What every command shares: default paths, the exit-code rule and the parser pieces.

Pure Python (no JAX import), so `--help` stays instant. Library modules may read the
defaults from here; commands build their parsers with `make_parser` and the `add_*`
helpers so that one thing has one flag name everywhere:
  --run-dir   a run directory (old spellings kept as aliases: train --out, chat/eval --checkpoint)
  --preset    a preset from guppy_jax.config (bench and compare also accept --config)
  --data-dir  a prepared data directory
  --quiet     no progress bars and no chatter: only the command's result and errors

Every command (bench aside, which times compilation) keeps JAX's compiled programs in a
persistent cache, so a second `chat --prompt` on the same run skips compiling: by default in
$XDG_CACHE_HOME/guppy-jax/jax (~/.cache/guppy-jax/jax); GUPPY_COMPILE_CACHE=DIR moves it,
GUPPY_COMPILE_CACHE=off or --no-compile-cache turns it off. Chat's sampler is also kept there
as a compiled executable, so a second chat does not even trace it (guppy_jax/compiled_sampler.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import threading
from pathlib import Path

from .core.paths import DEFAULT_CASES, DEFAULT_DATA, DEFAULT_PERSONA, DEFAULT_RUN, REPO  # noqa: F401 (the flags' defaults)

# The exit-code rule, the same for every command.
EXIT_OK = 0           # done
EXIT_FAILED = 1       # the work failed: a run, a file or a checkpoint that cannot be used
EXIT_USAGE = 2        # bad usage: an unknown flag, a bad value, an impossible config
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C, SIGTERM or SIGHUP (train saves a checkpoint first)
EXIT_CODES = ("exit codes: 0 done, 1 the run failed, 2 bad usage or config, 130 interrupted (Ctrl-C, "
              "SIGTERM, SIGHUP). --debug (or GUPPY_DEBUG=1) shows full tracebacks")


def make_parser(prog: str, doc: str, *, raw: bool = False) -> argparse.ArgumentParser:
    """A command's parser: the first paragraph of its docstring as description, the
    exit-code rule as epilog, defaults shown in --help."""
    formatter = argparse.RawDescriptionHelpFormatter if raw else argparse.ArgumentDefaultsHelpFormatter
    description = doc.strip().split("\n\n")[0].replace("\n", " ")
    parser = argparse.ArgumentParser(prog=f"python -m guppy_jax.{prog}", description=description,
                                     epilog=EXIT_CODES, formatter_class=formatter)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and library logs (also: GUPPY_DEBUG=1)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not read or write JAX's persistent compilation cache (also: "
                             "GUPPY_COMPILE_CACHE=off; GUPPY_COMPILE_CACHE=DIR moves it)")
    return parser


def add_run_dir(parser, help_text: str, *aliases: str, default=DEFAULT_RUN, required: bool = False):
    """`--run-dir` (plus the command's old spelling as an alias)."""
    kwargs = {"required": True} if required else {"default": str(default)}
    parser.add_argument("--run-dir", *aliases, dest="run_dir", metavar="DIR", help=help_text, **kwargs)


def add_data_dir(parser, help_text: str = "prepared data directory (train.jsonl, eval.jsonl, "
                                          "tokenizer.json); the default one is generated when missing"):
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), metavar="DIR", help=help_text)


def add_preset(parser, choices, help_text: str, default=None, legacy_alias: bool = False):
    names = ["--preset"] + (["--config"] if legacy_alias else [])
    parser.add_argument(*names, dest="preset", choices=sorted(choices), default=default, help=help_text)


def add_quiet(parser):
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and no chatter: print only the result and errors")


def add_config_fields(parser, cls, skip=()):
    """One flag per field of a config dataclass (`--batch-size`, `--packing/--no-packing`...),
    default None so that only the flags given override the preset."""
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


def overrides(args, cls) -> dict:
    """The fields of `cls` that were given on the command line."""
    given = vars(args)
    return {f.name: given[f.name] for f in dataclasses.fields(cls)
            if f.name in given and given[f.name] is not None}


def debugging(argv=None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("GUPPY_DEBUG", "") not in ("", "0")


def silence_libraries() -> None:
    """Keep library noise off the terminal: orbax's logged tracebacks, and exceptions that
    tensorstore's callbacks or dying threads would print. The command reports what matters
    in one line; --debug keeps all of it."""
    for name in ("absl", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None


CACHE_OFF = ("off", "0", "no", "false", "none")


def compile_cache_dir(argv=None) -> Path | None:
    """Where JAX's persistent compilation cache lives for this command, or None when it is off."""
    argv = sys.argv[1:] if argv is None else argv
    value = os.environ.get("GUPPY_COMPILE_CACHE", "").strip()
    if "--no-compile-cache" in argv or value.lower() in CACHE_OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "guppy-jax" / "jax"


def use_compile_cache(directory: Path | None) -> None:
    """Point JAX's persistent compilation cache at `directory` (None: off), caching every
    program however quick it was to compile (the small ones add up at start-up). Set through
    the environment, read when JAX is imported, and through jax.config if it already is."""
    settings = {"jax_compilation_cache_dir": None}
    if directory is not None:
        settings = {"jax_compilation_cache_dir": str(directory),
                    "jax_persistent_cache_min_compile_time_secs": 0.0,
                    "jax_persistent_cache_min_entry_size_bytes": 0}
    for name, value in settings.items():
        if value is None:
            os.environ.pop(name.upper(), None)
        else:
            os.environ[name.upper()] = str(value)
    if "jax" in sys.modules:
        import jax
        for name, value in settings.items():
            jax.config.update(name, value)


def exit_at_once(code: int) -> None:
    """Exit without finalizing the interpreter, which takes ~0.25 s once JAX is loaded (a
    fifth of a cached chat's start-up): atexit handlers still run and output is flushed. Only
    for commands that leave nothing writing in the background (no orbax saves in flight)."""
    import atexit
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(main, compile_cache: bool = True, fast_exit: bool = False) -> None:
    """Run a command's main(argv) as a program: one line for any failure (a traceback only
    with --debug or GUPPY_DEBUG=1), exit 130 for Ctrl-C, then exit with main's code. With
    `compile_cache`, JAX's persistent compilation cache is on unless the user turned it off;
    `fast_exit` commands (nothing left writing in the background when main returns) end
    with exit_at_once."""
    debug = debugging()
    if debug:  # the library reads the environment: its own logs then show as they are
        os.environ["GUPPY_DEBUG"] = "1"
    use_compile_cache(compile_cache_dir() if compile_cache else None)
    # accepted anywhere, subcommands included
    argv = [a for a in sys.argv[1:] if a not in ("--debug", "--no-compile-cache")]
    if not debug:
        silence_libraries()
    try:
        code = main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except Exception as err:  # the last line of defence: one line, not a traceback
        if debug:
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        code = error(f"{type(err).__name__}: {first} (run again with --debug for the traceback)")
    if fast_exit:
        exit_at_once(code)
    sys.exit(code)


def error(message, code: int = EXIT_FAILED) -> int:
    """Print one `error: ...` line to stderr and return the exit code to use."""
    print(f"error: {message}", file=sys.stderr)
    return code


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


SEED_MIN, SEED_MAX = -2**63, 2**63 - 1  # what jax.random.key takes


def seed_problem(seed: int, flag: str = "--seed") -> str | None:
    """Why `seed` cannot seed JAX's random keys (it must fit in 64 bits), or None. Checked
    before any work, so that a bad value is a usage error (exit 2), not a late failure."""
    if not SEED_MIN <= seed <= SEED_MAX:
        return f"{flag} must be in [{SEED_MIN}, {SEED_MAX}] (64 bits), got {seed}"
    return None


def output_file_problem(path, flag: str) -> str | None:
    """Why a command could not write its result to the file `path` (given with `flag`), or
    None: checked before any work, so that a run does not end, after all its work, on an
    output path that could never be written (exit 2: bad usage)."""
    path = Path(path)
    if path.is_dir():
        return f"{flag} {path} is a directory: give a file name, such as {path / 'results.json'}"
    parent = path.parent
    if not parent.exists():
        return f"{flag} {path}: the folder {parent} does not exist: create it first, or choose another path"
    if not parent.is_dir():
        return f"{flag} {path}: {parent} is not a folder"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{flag} {path}: the file may not be written (permission denied)"
    if not path.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return f"{flag} {path}: files may not be created in {parent} (permission denied)"
    return None
