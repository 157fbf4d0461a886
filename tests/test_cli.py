"""One command-line layer: shared flag names, one exit-code rule, no command imports another."""
import ast
from pathlib import Path

import pytest

from guppy_jax import bench, chat, cli, compare, convert, eval as guppy_eval, inspect as guppy_inspect, prepare, train, web

PACKAGE = Path(cli.__file__).parent
COMMANDS = {"train": train, "chat": chat, "eval": guppy_eval, "convert": convert, "bench": bench,
            "compare": compare, "prepare": prepare, "inspect": guppy_inspect, "web": web}


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("guppy_jax"):
            found |= {node.module.split(".", 1)[1]} if "." in node.module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("guppy_jax.")}
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_no_command_imports_another_command(name):
    assert not (imported_modules(PACKAGE / f"{name}.py") & set(COMMANDS)), imported_modules(PACKAGE / f"{name}.py")


def test_no_library_module_imports_a_command():
    for path in PACKAGE.glob("*.py"):
        if path.stem not in COMMANDS and path.stem != "__main__":
            assert not (imported_modules(path) & set(COMMANDS)), path.name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_states_exit_codes_and_has_quiet(name, capsys):
    with pytest.raises(SystemExit) as done:
        COMMANDS[name].main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert cli.EXIT_CODES in text
    if name not in ("convert", "web"):  # their flags live on their subcommands
        assert "--quiet" in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_unknown_flags_are_usage_errors(name):
    with pytest.raises(SystemExit) as done:
        COMMANDS[name].main(["--no-such-flag"])
    assert done.value.code == cli.EXIT_USAGE


def test_one_flag_for_a_run_directory_with_the_old_spellings_kept():
    for parser, old in ((train.build_parser(), "--out"), (chat.build_parser(), "--checkpoint"),
                        (guppy_eval.build_parser(), "--checkpoint")):
        assert parser.parse_args([]).run_dir == str(cli.DEFAULT_RUN)
        assert parser.parse_args(["--run-dir", "a"]).run_dir == "a" == parser.parse_args([old, "a"]).run_dir
    conv = convert.build_parser()
    assert conv.parse_args(["import", "x.pt", "--run-dir", "r"]).run_dir == "r"
    assert conv.parse_args(["import", "x.pt", "--out", "r"]).run_dir == "r"
    assert conv.parse_args(["export", "--out", "e"]).run_dir == str(cli.DEFAULT_RUN)
    assert conv.parse_args(["export", "r", "--out", "e"]).run_dir_pos == "r"


def test_preset_everywhere_and_config_kept_where_it_was():
    assert bench.build_parser().parse_args(["--preset", "tiny"]).preset == "tiny"
    assert compare.build_parser().parse_args(["--config", "tiny"]).preset == "tiny"
    assert train.build_parser().parse_args(["--preset", "cpu"]).preset == "cpu"


def test_a_bad_config_is_exit_2_and_a_failed_run_exit_1(tmp_path, capsys):
    assert train.main(["--preset", "tiny", "--d-model", "30", "--run-dir", str(tmp_path / "r")]) == 2
    assert "divisible by n_heads" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert train.main(["--preset", "tiny", "--data-dir", str(tmp_path / "empty"),
                       "--run-dir", str(tmp_path / "r")]) == 1
    assert "missing data file" in capsys.readouterr().err
    assert chat.main(["--run-dir", str(tmp_path / "nothing"), "--top-p", "0"]) == 2


def test_no_function_in_the_package_is_over_60_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_an_unexpected_failure_is_one_line_unless_debugging(monkeypatch, capsys):
    def broken(argv):
        raise RuntimeError("the tank sprang a leak\nand more detail")
    monkeypatch.setattr("sys.argv", ["guppy"])
    monkeypatch.delenv("GUPPY_DEBUG", raising=False)
    monkeypatch.setattr(cli, "silence_libraries", lambda: None)  # keep this process's hooks as they are
    with pytest.raises(SystemExit) as done:
        cli.run(broken)
    assert done.value.code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: the tank sprang a leak" in err and "--debug" in err
    monkeypatch.setattr("sys.argv", ["guppy", "--debug"])
    with pytest.raises(RuntimeError, match="sprang a leak"):
        cli.run(broken)


def test_ctrl_c_anywhere_exits_130_without_a_traceback(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt
    monkeypatch.setattr("sys.argv", ["guppy"])
    monkeypatch.setattr(cli, "silence_libraries", lambda: None)
    with pytest.raises(SystemExit) as done:
        cli.run(interrupted)
    assert done.value.code == cli.EXIT_INTERRUPTED and "Traceback" not in capsys.readouterr().err


def test_the_compile_cache_lives_in_the_user_cache_and_can_be_moved_or_turned_off(monkeypatch, tmp_path):
    monkeypatch.delenv("GUPPY_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.compile_cache_dir([]) == tmp_path / "xdg" / "guppy-jax" / "jax"
    assert cli.compile_cache_dir(["--no-compile-cache"]) is None
    monkeypatch.setenv("GUPPY_COMPILE_CACHE", str(tmp_path / "elsewhere"))
    assert cli.compile_cache_dir([]) == tmp_path / "elsewhere"
    for off in ("off", "0", "OFF"):
        monkeypatch.setenv("GUPPY_COMPILE_CACHE", off)
        assert cli.compile_cache_dir([]) is None


def _chat_once(run_dir, env, *flags):
    import subprocess
    import sys
    import time
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "guppy_jax.chat", "--run-dir", str(run_dir), "--prompt",
                           "hi guppy", "--temperature", "0", *flags], env=env, capture_output=True, text=True,
                          cwd=cli.REPO)
    assert done.returncode == 0, done.stderr
    return done.stdout, time.perf_counter() - start


def test_a_second_chat_reads_its_programs_from_the_compile_cache(trained, tmp_path):
    import os
    cache = tmp_path / "cache"
    env = {**os.environ, "GUPPY_COMPILE_CACHE": str(cache)}
    first, _ = _chat_once(trained.run_dir, env)
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first chat wrote nothing to the compile cache"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    second, _ = _chat_once(trained.run_dir, env)
    assert second == first  # greedy: the cached programs compute the same answer
    # the second run found every program it needed: nothing new was compiled and written
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith("-atime")) == \
        sorted(n for n in entries if not n.endswith("-atime"))
    assert all(stamps[p.name] == p.stat().st_mtime_ns for p in cache.iterdir()
               if p.name in stamps and not p.name.endswith("-atime"))


def test_with_the_compile_cache_off_nothing_is_written(trained, tmp_path):
    import os
    cache = tmp_path / "cache"
    env = {**os.environ, "GUPPY_COMPILE_CACHE": str(cache)}
    _chat_once(trained.run_dir, env, "--no-compile-cache")
    assert not cache.exists() or not any(cache.iterdir())
    _chat_once(trained.run_dir, {**env, "GUPPY_COMPILE_CACHE": "off"})
    assert not cache.exists() or not any(cache.iterdir())
