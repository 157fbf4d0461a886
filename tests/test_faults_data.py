"""Fault injection for data directories: `prepare` killed at each of its named moments,
interrupted, racing another prepare, or out of disk. A data directory must always be exactly
the old one or exactly the new one, and whatever a killed prepare left beside it is cleared
by the next prepare or train. Everything here runs `python -m guppy_jax.<command>` as real
processes, killed by real signals (guppy_jax.core.faults names the moments: GUPPY_KILL_AT,
GUPPY_MOMENTS)."""
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

from guppy_jax.cli import REPO
from guppy_jax.core.config import PRESETS
from guppy_jax.data.datadir import DataDirLock, checked_digest, load_for_training, prepare

MOCHI = REPO / "data" / "personas" / "mochi.toml"
SAMPLES = 300  # small: a prepare takes well under a second
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GUPPY_DEBUG": "", "GUPPY_KILL_AT": "", "GUPPY_MOMENTS": ""}


def command(module: str, *args) -> list[str]:
    return [sys.executable, "-m", f"guppy_jax.{module}", *map(str, args)]


def prepare_process(out, persona=None, samples=SAMPLES) -> list[str]:
    return command("prepare", *(["--persona", persona] if persona else []), "--samples", samples, "--out", out,
                   "--quiet")


def run(cmd, timeout=240, preexec_fn=None, **env) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env={**ENV, **env}, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn)


def start(cmd, stderr=subprocess.PIPE, **env) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env={**ENV, **env}, stdout=subprocess.PIPE, stderr=stderr, text=True)


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never came true")
        time.sleep(0.001)


def passed(trace: Path, name: str, proc: subprocess.Popen):
    """A condition: the process passed moment `name` (or ended, which the test then rejects)."""
    return lambda: proc.poll() is not None or (trace.exists() and f"{name} 1\n" in trace.read_text())


def snapshot(folder: Path) -> dict:
    """Every file under folder, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(text: str) -> str:
    text = text.strip()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text


def conversations(n: int) -> list[dict]:
    asks = ["hello", "are you hungry", "what do you see", "is the water warm"]
    says = ["i see a bubble. it goes up.", "food. always food.", "the water is warm.", "hello. i swim."]
    return [{"input": f"{asks[i % 4]} {i}", "output": f"{says[(i * 3) % 4]} {i} bubbles."} for i in range(n)]


# ----------------------------------------------------------------------------- kill -9 at every moment
def test_prepare_killed_at_each_of_its_moments_leaves_the_old_directory_or_the_new_one(tmp_path):
    """A mochi prepare over a Guppy directory, killed at every moment it passes through: the
    directory is then byte for byte the Guppy one (killed before the new one was renamed into
    place) or the mochi one (after), never a mix; killed between the two renames of the swap,
    train puts the old one back itself and trains; the next prepare clears every leftover."""
    guppy, mochi = tmp_path / "guppy", tmp_path / "mochi"
    prepare(out=guppy, samples=SAMPLES, quiet=True)
    prepare(MOCHI, mochi, samples=SAMPLES, quiet=True)
    old, new = snapshot(guppy), snapshot(mochi)
    assert old.keys() == new.keys() and all(old[name] != new[name] for name in old)
    work = tmp_path / "work"
    data = work / "data"
    assert run(prepare_process(data)).returncode == 0  # the command makes the same bytes as the function
    assert snapshot(data) == old
    trace = tmp_path / "moments.txt"
    assert run(prepare_process(data, MOCHI), GUPPY_MOMENTS=str(trace)).returncode == 0
    assert snapshot(data) == new
    arrivals = [tuple(line.split()) for line in trace.read_text().splitlines()]
    assert len(arrivals) >= 10, arrivals
    commit = arrivals.index(("prepare.swapped", "1"))  # the new directory counts once it is renamed into place
    assert run(prepare_process(data)).returncode == 0
    for i, (name, nth) in enumerate(arrivals):
        killed = run(prepare_process(data, MOCHI), GUPPY_KILL_AT=f"{name}:{nth}")
        assert killed.returncode == -signal.SIGKILL, (name, nth, killed.stderr)
        if name == "prepare.old_aside":  # between the two renames: no directory at all until recovered
            assert not data.exists()
            trained = run(command("train", "--preset", "tiny", "--steps", "2", "--data-dir", data, "--run-dir",
                                  tmp_path / "run", "--quiet"))
            assert trained.returncode == 0, trained.stderr
        assert snapshot(data) == (new if i >= commit else old), f"killed at {name} {nth}"
        again = run(prepare_process(data))  # clears what the killed one left; Guppy again for the next kill
        assert again.returncode == 0, again.stderr
        assert snapshot(data) == old and os.listdir(work) == ["data"], f"killed at {name} {nth}"


def test_prepare_from_killed_before_its_swap_leaves_the_old_directory(tmp_path):
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(60)))
    work = tmp_path / "work"
    data = work / "data"
    prepare(out=data, samples=SAMPLES, quiet=True)
    old = snapshot(data)
    for name in ("prepare.eval_written", "prepare.old_aside"):
        killed = run(command("prepare", "--from", src, "--out", data), GUPPY_KILL_AT=name)
        assert killed.returncode == -signal.SIGKILL, (name, killed.stderr)
        tiny = PRESETS["tiny"]
        load_for_training(tiny.replace(batch_size=2), data, quiet=True)  # what train reads first recovers it
        assert snapshot(data) == old, name
    done = run(command("prepare", "--from", src, "--out", data))
    assert done.returncode == 0, done.stderr
    assert "train 57 samples" in done.stdout and os.listdir(work) == ["data"]


# ----------------------------------------------------------------------------- Ctrl-C, a second prepare
def test_ctrl_c_during_prepare_leaves_the_old_directory_and_nothing_beside_it(tmp_path):
    work = tmp_path / "work"
    data = work / "data"
    prepare(out=data, samples=SAMPLES, quiet=True)
    old, trace = snapshot(data), tmp_path / "moments.txt"
    proc = start(prepare_process(data, MOCHI, samples=20_000), GUPPY_MOMENTS=str(trace))
    wait_for(passed(trace, "prepare.locked", proc))  # generating its 20,000 conversations now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert snapshot(data) == old and os.listdir(work) == ["data"]


def test_a_second_prepare_into_the_same_out_is_refused_naming_the_first(tmp_path):
    """Both a persona prepare and a --from prepare are refused while another writes --out;
    the first finishes with a directory whose files belong together."""
    data, trace = tmp_path / "data", tmp_path / "moments.txt"
    src = tmp_path / "mine.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(60)))
    first = start(prepare_process(data, samples=20_000), GUPPY_MOMENTS=str(trace))
    wait_for(passed(trace, "prepare.locked", first))
    first.send_signal(signal.SIGSTOP)  # holds the lock for as long as the test needs
    try:
        assert first.poll() is None
        second = run(prepare_process(data, MOCHI))
        from_file = run(command("prepare", "--from", src, "--out", data))
    finally:
        first.send_signal(signal.SIGCONT)
    for refused in (second, from_file):
        assert refused.returncode == 1
        assert f"is being written by another process (pid {first.pid})" in one_line(refused.stderr)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    summary = json.loads((data / "summary.json").read_text())
    assert summary["persona"] == "guppy" and summary["samples"] == 20_000
    assert checked_digest(data) == summary["digest"]  # its files belong together
    assert sorted(os.listdir(tmp_path)) == ["data", "mine.jsonl", "moments.txt"]


# ----------------------------------------------------------------------------- disk full
def test_disk_full_during_prepare_keeps_the_old_directory_and_says_so_in_one_line(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)]).returncode == 0
    try:  # room for a 300-sample Guppy directory, not for 3,000 mochi conversations beside it
        data = small / "data"
        prepare(out=data, samples=SAMPLES, quiet=True)
        old = snapshot(data)
        limit = None
        if not mounted:  # no tmpfs here: files may not grow past 128 KiB, so the new train.jsonl fails the same way
            def limit():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))
        result = run(prepare_process(data, MOCHI, samples=3000), preexec_fn=limit)
        after, beside = snapshot(data), os.listdir(small)
    finally:
        if mounted:
            run(["umount", str(small)])
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert ("the disk is full" if mounted else "file size limit") in line, line
    assert ("free some space" if mounted else "raise the limit") in line
    assert f"the data directory {data} is untouched" in line and line.endswith("and run prepare again")
    assert after == old and beside == ["data"]  # nothing partial left, in it or beside it


# ----------------------------------------------------------------------------- the default directory, made by train
FIRST_USE = """
import functools, sys
from pathlib import Path
import guppy_jax.data.datadir as datadir
datadir.DEFAULT_DATA = Path(sys.argv[1])  # this directory plays the default one, at 300 samples
datadir.prepare = functools.partial(datadir.prepare, samples=300)
datadir.ensure_prepared(sys.argv[1])
"""


def test_the_default_directory_train_generates_is_swapped_in_whole_and_waits_for_another_writer(tmp_path):
    work = tmp_path / "work"
    data = work / "data"
    first_use = [sys.executable, "-c", FIRST_USE, str(data)]
    killed = run(first_use, GUPPY_KILL_AT="prepare.tokenizer_written")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not data.exists()  # not a directory without its tokenizer
    log = tmp_path / "stderr.txt"
    with DataDirLock(data), open(log, "w") as stderr:  # another process is writing it
        proc = start(first_use, stderr=stderr)
        wait_for(lambda: "waiting for pid" in log.read_text() or proc.poll() is not None)
    _, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and f"waiting for pid {os.getpid()}, which is writing {data}" in log.read_text()
    reference = tmp_path / "reference"
    prepare(out=reference, samples=SAMPLES, quiet=True)
    assert snapshot(data) == snapshot(reference) and os.listdir(work) == ["data"]
