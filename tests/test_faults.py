"""Fault injection: runs killed, signalled, corrupted, filled and misused, as a hostile but
honest user would. Each test asserts that nothing was lost: the final state equals an
uninterrupted run's where the scenario allows, or the previous checkpoint is intact and used.

Signals, kills, locks and terminal output need real processes: those run
`python -m guppy_jax.<command>` as subprocesses. The rest call the same code in-process,
which is several seconds quicker a run.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import guppy_jax.core.steps as steps
from guppy_jax import chat, convert, prepare as prepare_cmd, train as train_cmd
from guppy_jax.training.checkpoints import load_for_inference
from guppy_jax.cli import REPO

from .helpers import losses, metrics, run_weights
from guppy_jax.core.config import PRESETS
from guppy_jax.data.datadir import STORE_FILES, prepare
from guppy_jax.training.loop import TrainError, TrainOptions, train
from guppy_jax.training.report import Reporter

STEPS = 40
CFG = PRESETS["tiny"].replace(optim=PRESETS["tiny"].optim.replace(steps=STEPS), checkpoint_every=5,
                              eval_every=20)
FLAGS = ["--preset", "tiny", "--steps", str(STEPS), "--checkpoint-every", "5", "--eval-every", "20"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "GUPPY_DEBUG": ""}


# ----------------------------------------------------------------------------- helpers
def command(module: str, *args) -> list[str]:
    return [sys.executable, "-m", f"guppy_jax.{module}", *map(str, args)]


def train_process(run_dir, data_dir, *extra) -> list[str]:
    return command("train", *FLAGS, "--run-dir", run_dir, "--data-dir", data_dir, "--quiet", *extra)


def run(cmd, timeout=240, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("text", True)
    kw.setdefault("env", ENV)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=timeout, **kw)


def start(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_here(run_dir, data_dir, **kw) -> dict:
    return fit(CFG, run_dir, data_dir, preset="tiny", **kw)


def fit(cfg, run_dir, data_dir, **kw) -> dict:
    """`train` in this process, quiet and without the closing samples."""
    return train(cfg, TrainOptions(out=run_dir, data_dir=data_dir, show_samples=False, **kw), Reporter(quiet=True))


def wait_for(condition, timeout=120.0, every=0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise TimeoutError("the condition never came true")


def logged(run_dir, steps_done: int):
    """A condition: the running process has logged at least `steps_done` train steps."""
    path = Path(run_dir) / "metrics.jsonl"
    return lambda: path.exists() and path.read_text().count('"loss"') >= steps_done


def saving(run_dir, complete: int = 0):
    """A condition: a save is in progress (orbax's temporary directory exists) and at least
    `complete` periodic checkpoints are complete."""
    folder = Path(run_dir) / "checkpoints"

    def check():
        try:
            names = [p.name for p in folder.iterdir()]
        except FileNotFoundError:
            return False
        return any("orbax-checkpoint-tmp" in n for n in names) and sum(n.isdigit() for n in names) >= complete
    return check


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def assert_same_run(run_dir, reference):
    """Every step's loss and the final weights, bit for bit."""
    assert losses(run_dir) == reference.losses
    _, params, _ = load_for_inference(run_dir, best=False)
    assert all(np.array_equal(a, b) for a, b in zip(leaves(params), leaves(reference.params)))


def one_line(text: str) -> str:
    """An error as users should see it: a line or two, never a traceback."""
    text = text.strip()
    assert "Traceback" not in text, text
    assert 0 < len(text.splitlines()) <= 3, text
    return text


def step_dirs(run_dir, folder="checkpoints") -> list[Path]:
    return sorted((p for p in (Path(run_dir) / folder).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


class Reference:
    def __init__(self, run_dir):
        self.losses = losses(run_dir)
        self.params = load_for_inference(run_dir, best=False)[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> Reference:
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train_here(out, data_dir)
    return Reference(out)


# ----------------------------------------------------------------------------- 1. signals
def test_every_stopping_signal_saves_and_the_run_ends_bit_for_bit(tmp_path, data_dir, reference):
    """Ctrl-C while compiling, SIGTERM, then SIGHUP twice (the second lands during the
    save): each saves, exits 130 without a traceback, and --resume goes on."""
    out = tmp_path / "run"
    for resume, ready, signals in ((False, lambda: (out / "config.json").exists(), [signal.SIGINT]),
                                   (True, logged(out, 8), [signal.SIGTERM]),
                                   (True, logged(out, 20), [signal.SIGHUP, signal.SIGHUP])):
        proc = start(train_process(out, data_dir, *(["--resume"] if resume else [])))
        wait_for(ready, every=0.005)
        for i, sig in enumerate(signals):
            time.sleep(0.03 * i)
            if proc.poll() is None:
                proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and "Traceback" not in err, err
        assert not [p for p in (out / "checkpoints").iterdir() if "tmp" in p.name]
    assert max(int(p.name) for p in step_dirs(out)) >= 20  # the steps since the last periodic save kept
    finished = run(train_process(out, data_dir, "--resume"))
    assert finished.returncode == 0, finished.stderr
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- 2. SIGKILL mid-save
def test_kill_9_during_saves_the_first_included_loses_nothing(tmp_path, data_dir, reference):
    """Killed during its first save, a run can start fresh (no "pass --resume" deadlock);
    killed during later saves, --resume continues from the last complete one."""
    out = tmp_path / "run"
    for extra, complete in (([], 0), ([], 1), (["--resume"], 2)):  # the tiny preset keeps 2
        proc = start(train_process(out, data_dir, *extra))
        wait_for(saving(out, complete))
        proc.kill()
        proc.wait(timeout=60)
        if complete == 0:
            assert not step_dirs(out)  # nothing complete: the half-written save must not block
    finished = run(train_process(out, data_dir, "--resume"))
    assert finished.returncode == 0, finished.stderr
    assert_same_run(out, reference)


def test_resume_before_any_complete_save_starts_from_step_zero(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_here(out, data_dir, stop_after=5)
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "best", ignore_errors=True)
    (out / "checkpoints" / "5.orbax-checkpoint-tmp").mkdir(parents=True)  # what a kill mid-save leaves
    summary = train_here(out, data_dir, resume=True, stop_after=5)
    assert summary["step"] == 5 and "starting from step 0" in capsys.readouterr().err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["5"]


# ----------------------------------------------------------------------------- 3. convert over runs
def test_import_and_export_never_overwrite_a_run(tmp_path, trained, capsys):
    pytest.importorskip("torch")
    export = tmp_path / "export"
    assert convert.main(["export", str(trained.run_dir), "--out", str(export), "--format", "bin"]) == 0
    before = (export / "pytorch_model.bin").read_bytes()
    capsys.readouterr()
    assert convert.main(["export", str(trained.run_dir), "--out", str(export), "--format", "bin"]) == 1
    assert "--force" in one_line(capsys.readouterr().err)
    assert convert.main(["export", str(trained.run_dir), "--out", str(trained.run_dir), "--force"]) == 1
    assert "is a run directory" in one_line(capsys.readouterr().err)
    target = tmp_path / "target"
    shutil.copytree(trained.run_dir, target)
    config_before = (target / "config.json").read_bytes()
    assert convert.main(["import", str(export / "pytorch_model.bin"), "--run-dir", str(target)]) == 1
    assert "already holds a run" in one_line(capsys.readouterr().err)
    assert (target / "config.json").read_bytes() == config_before
    assert convert.main(["import", str(export / "pytorch_model.bin"), "--run-dir", str(target), "--force"]) == 0
    assert chat.main(["--run-dir", str(target), "--prompt", "hi", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("Guppy> ")
    assert (export / "pytorch_model.bin").read_bytes() == before


# ----------------------------------------------------------------------------- 4. resume keeps its tokenizer
def test_resume_keeps_the_runs_own_tokenizer(tmp_path, trained):
    out = tmp_path / "run"
    shutil.copytree(trained.run_dir, out)
    other = tmp_path / "other-data"
    prepare(out=other, samples=300, seed=5, vocab_size=2048, quiet=True)
    tokenizer_before = (out / "tokenizer.json").read_bytes()
    tiny = PRESETS["tiny"]
    with pytest.raises(TrainError, match="is not the tokenizer"):
        fit(tiny, out, other, resume=True)
    assert (out / "tokenizer.json").read_bytes() == tokenizer_before
    fit(tiny, out, trained.data_dir, resume=True)  # nothing left to train
    assert (out / "tokenizer.json").read_bytes() == tokenizer_before


# ----------------------------------------------------------------------------- 5. one writer per run dir
def test_a_second_training_on_the_same_run_dir_is_refused(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    first = start(train_process(out, data_dir))
    wait_for(logged(out, 2), every=0.005)
    with pytest.raises(Exception, match=f"in use by another process \\(pid {first.pid}\\)"):
        train_here(out, data_dir, resume=True)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- 6, 7. torn and corrupt files
def test_torn_metrics_and_corrupt_checkpoints_fall_back_and_lose_nothing(tmp_path, data_dir, reference, capsys):
    out = tmp_path / "run"
    train_here(out, data_dir, stop_after=15)  # checkpoints 10 and 15
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 16, "loss": 3.1')  # a crash in the middle of a write
    (step_dirs(out)[-1] / "meta" / "metadata").write_text('{"data_position": {"epo')  # damaged record
    capsys.readouterr()
    assert chat.main(["--run-dir", str(out), "--latest", "--prompt", "hi"]) == 0  # the weights are fine
    assert "unreadable" not in capsys.readouterr().err
    train_here(out, data_dir, resume=True, stop_after=10)  # falls back to 10, trains to 20
    err = capsys.readouterr().err
    assert "checkpoints/15 is unreadable" in err and "metrics.jsonl:" in err
    newest = step_dirs(out)[-1]
    biggest = max((p for p in (newest / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])  # a truncated array file
    result = run(command("chat", "--run-dir", out, "--latest", "--prompt", "hi"))
    assert result.returncode == 0 and f"checkpoints/{newest.name} is unreadable" in one_line(result.stderr)
    train_here(out, data_dir, resume=True)
    assert f"checkpoints/{newest.name} is unreadable" in capsys.readouterr().err
    assert (out / "unreadable" / f"checkpoints-{newest.name}").is_dir()  # set aside, not deleted
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- 8. disk full
def test_disk_full_keeps_the_previous_checkpoint_and_says_so_in_one_line(tmp_path, data_dir, reference):
    small = tmp_path / "small"
    small.mkdir()
    mounted = run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(small)]).returncode == 0
    if mounted:  # room for a few checkpoints of the tiny model, not for all of them
        try:
            result = run(train_process(small / "run", data_dir))
            shutil.copytree(small / "run", tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
        finally:
            run(["umount", str(small)])
    else:  # no tmpfs here: files may not grow past 256 KiB, so the first save fails the same way
        def limit_file_size():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
        result = run(train_process(tmp_path / "run", data_dir), preexec_fn=limit_file_size)
    assert result.returncode == 1
    assert "the incomplete files were removed" in one_line(result.stderr) and "--resume" in result.stderr
    out = tmp_path / "run"
    for folder in ("checkpoints", "best"):
        assert not [p for p in (out / folder).glob("*") if "tmp" in p.name]
    train_here(out, data_dir, resume=True)  # now with room to spare
    assert_same_run(out, reference)


# ----------------------------------------------------------------------------- 9. stale best/
def test_a_stale_best_checkpoint_never_wins_over_a_new_run(tmp_path, data_dir):
    out = tmp_path / "run"
    fit(CFG.replace(seed=1), out, data_dir)
    shutil.rmtree(out / "checkpoints")  # only best/ is left of the old run
    old_best = run_weights(out, best=True)
    with pytest.raises(TrainError, match="--force"):
        fit(CFG.replace(seed=2), out, data_dir)
    fit(CFG.replace(seed=2), out, data_dir, force=True)
    evals = metrics(out, "eval_loss")
    (best,) = step_dirs(out, "best")
    assert int(best.name) == min(evals, key=evals.get)  # the new run's own best step...
    new_best = run_weights(out, best=True)  # ...holding the new run's weights, not the old run's
    assert not any(np.array_equal(a, b) for a, b in zip(new_best, old_best))


# ----------------------------------------------------------------------------- 10. memory bounded up front
@pytest.mark.parametrize("argv", [["--max-seq-len", "100000", "--batch-size", "1"], ["--vocab-size", "100000000"]])
def test_huge_models_are_refused_before_they_eat_memory(tmp_path, data_dir, capsys, argv):
    started = time.monotonic()
    code = train_cmd.main(["--preset", "tiny", "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir),
                           "--quiet", *argv])
    assert code == 2 and "GiB of memory, but only" in one_line(capsys.readouterr().err)
    assert time.monotonic() - started < 30


def test_huge_datasets_are_refused_before_they_eat_memory(tmp_path, capsys):
    assert prepare_cmd.main(["--samples", "1000000000", "--out", str(tmp_path / "d")]) == 2
    assert "needs about" in one_line(capsys.readouterr().err) and not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- 11. values that slipped through
@pytest.mark.parametrize("flag, value", [("--grad-clip", "nan"), ("--weight-decay", "nan"), ("--lr", "inf"),
                                         ("--eps", "-1"), ("--seed", "-3")])
def test_bad_optimizer_values_are_refused(tmp_path, data_dir, capsys, flag, value):
    assert train_cmd.main([*FLAGS, "--run-dir", str(tmp_path / "r"), "--data-dir", str(data_dir), flag, value]) == 2
    assert flag[2:].replace("-", "_") in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("value", ["0", "-1", "100000000"])
def test_prepare_refuses_a_vocab_it_cannot_build(tmp_path, capsys, value):
    assert prepare_cmd.main(["--vocab-size", value, "--samples", "50", "--out", str(tmp_path / "d")]) == 2
    assert "--vocab-size must be in [259, 65536]" in one_line(capsys.readouterr().err)


def test_nan_temperature_and_nan_weights_are_refused(tmp_path, trained, capsys):
    torch = pytest.importorskip("torch")
    assert chat.main(["--run-dir", str(trained.run_dir), "--temperature", "nan", "--prompt", "hi"]) == 2
    assert "temperature" in one_line(capsys.readouterr().err)
    export = tmp_path / "export"
    assert convert.main(["export", str(trained.run_dir), "--out", str(export), "--format", "bin"]) == 0
    weights = torch.load(export / "pytorch_model.bin", weights_only=True)
    weights["blocks.0.attn.qkv.weight"][0, :3] = float("nan")
    torch.save(weights, export / "pytorch_model.bin")
    capsys.readouterr()
    assert convert.main(["import", str(export / "pytorch_model.bin"), "--run-dir", str(tmp_path / "r")]) == 1
    assert "blocks.0.attn.qkv.weight (3 values)" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_the_non_finite_message_says_when_no_checkpoint_exists(tmp_path, data_dir, monkeypatch, capsys):
    real_step = steps.train_step

    def poisoned(state, batch, rng, dropout=True):  # NaN from update 3 on, before the first save
        new_state, metrics = real_step(state, batch, rng, dropout)
        metrics["loss"] = jnp.where(state.step >= 2, jnp.nan, metrics["loss"])
        return new_state, metrics
    monkeypatch.setattr(steps, "train_step", poisoned)
    with pytest.raises(TrainError, match="non-finite"):
        train_here(tmp_path / "run", data_dir)
    err = capsys.readouterr().err
    assert "non-finite loss at step 3" in err and "no checkpoint had been saved yet" in err
    assert "untouched" not in err


# ----------------------------------------------------------------------------- 12. rough edges
def test_non_utf8_data_names_file_and_line(tmp_path, data_dir, capsys):
    # A directory from before the token store (JSONL, no digest) is read line by line at start.
    bad = tmp_path / "data"
    shutil.copytree(data_dir, bad)
    for name in (*STORE_FILES, "summary.json"):
        (bad / name).unlink()
    with open(bad / "train.jsonl", "ab") as f:
        f.write(b'{"input": "hi", "output": "caf\xe9"}\n')
    lines = (bad / "train.jsonl").read_bytes().count(b"\n")
    assert train_cmd.main([*FLAGS, "--run-dir", str(tmp_path / "run"), "--data-dir", str(bad), "--quiet"]) == 1
    assert f"train.jsonl:{lines}: not UTF-8 text" in one_line(capsys.readouterr().err)


def test_a_corrupt_tokenizer_is_one_line(tmp_path, trained, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained.run_dir, out)
    (out / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    assert chat.main(["--run-dir", str(out), "--prompt", "hi"]) == 1
    assert "not a readable tokenizer file" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("template", ["i like {no-such}", "i like {food"])
def test_persona_templates_with_stray_braces_are_refused(tmp_path, capsys, template):
    persona = tmp_path / "p.toml"
    persona.write_text(f'name = "x"\n[pools]\nfood = ["a"]\n[[topics]]\nname = "t"\nprompts = ["hi"]\n'
                       f'responses = ["{template}"]\n')
    assert prepare_cmd.main(["--persona", str(persona), "--out", str(tmp_path / "d"), "--samples", "10"]) == 2
    assert "a brace that is not a {slot}" in one_line(capsys.readouterr().err)


def test_chat_reads_pipes_with_blank_lines_bad_bytes_or_no_stdin_at_all(trained):
    piped = run(command("chat", "--run-dir", trained.run_dir, "--temperature", "0"),
                input="hi guppy\n\nare you hungry\n\xff\xfe\nquit\n".encode("latin-1"), text=False)
    assert piped.returncode == 0 and b"Traceback" not in piped.stderr, piped.stderr
    assert piped.stdout.count(b"Guppy> ") == 3
    closed = run(["bash", "-c", " ".join(command("chat", "--run-dir", trained.run_dir)) + " <&-"])
    assert closed.returncode == 2 and "stdin is closed" in one_line(closed.stderr)


def test_inference_writes_nothing_into_the_run_dir(tmp_path, trained, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained.run_dir, out)
    shutil.rmtree(out / "best")  # as an imported run: periodic checkpoints only

    def snapshot():
        return sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*"))
    before = snapshot()
    assert chat.main(["--run-dir", str(out), "--prompt", "hi"]) == 0
    assert snapshot() == before
    readonly = tmp_path / "ro"
    readonly.mkdir()
    if run(["mount", "--bind", str(out), str(readonly)]).returncode:
        pytest.skip("no bind mounts on this machine: the read-only half of this test cannot run "
                    "(the snapshot above already showed that chat writes nothing)")
    try:
        remounted = run(["mount", "-o", "remount,bind,ro", str(readonly)])
        assert remounted.returncode == 0, remounted.stderr
        result = run(command("chat", "--run-dir", readonly, "--prompt", "hi"))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    finally:
        run(["umount", str(readonly)])


# ----------------------------------------------------------------------------- issue 24: kills at named moments
def killed_at(name: str, nth: int = 1) -> dict:
    """The environment that SIGKILLs the command at its nth arrival at moment `name`
    (guppy_jax/core/faults.py): the kill lands exactly there, no sleeping and hoping."""
    return {**ENV, "GUPPY_KILL_AT": f"{name}:{nth}"}


def metrics_steps(run_dir) -> list[int]:
    return sorted(losses(run_dir))


def latest_checkpoint(run_dir) -> int:
    return max((int(p.name) for p in step_dirs(run_dir)), default=0)


def test_resume_killed_during_start_up_keeps_the_whole_metrics_history(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    assert run(train_process(out, data_dir, "--stop-after", "30")).returncode == 0
    assert metrics_steps(out) == list(range(1, 31))
    # killed once the run is open, after the kept lines are written aside, and after they replace the log
    for name in ("run.opened", "metrics.rewritten", "metrics.replaced"):
        killed = run(train_process(out, data_dir, "--resume"), env=killed_at(name))
        assert killed.returncode == -signal.SIGKILL, (name, killed.stderr)
        assert metrics_steps(out) == list(range(1, 31)), name
    assert run(train_process(out, data_dir, "--resume")).returncode == 0
    assert_same_run(out, reference)


@pytest.mark.slow
def test_kill_9_at_any_moment_of_train_or_resume_loses_nothing(tmp_path, data_dir, reference):
    """Lists the moments a run passes through, kills a fresh `train` at ten of them and a
    chain of `--resume`s at ten more: after each kill the metrics cover every step up to the
    newest checkpoint, and the last --resume ends equal to a run never interrupted."""
    trace = tmp_path / "moments.txt"
    listed = subprocess.run(train_process(tmp_path / "listed", data_dir), cwd=REPO, capture_output=True,
                            env={**ENV, "GUPPY_MOMENTS": str(trace)}, timeout=240)
    assert listed.returncode == 0, listed.stderr
    moments = [tuple(line.rsplit(" ", 1)) for line in trace.read_text().splitlines()]
    assert {name for name, _ in moments} >= {"run.opened", "metrics.written", "checkpoint.saved", "summary.written"}
    picks = [moments[i] for i in np.linspace(0, len(moments) - 1, 10).astype(int)]

    def intact(run_dir) -> None:
        if (run_dir / "metrics.jsonl").exists() and step_dirs(run_dir):
            assert set(range(1, latest_checkpoint(run_dir) + 1)) <= set(metrics_steps(run_dir))

    for i, (name, nth) in enumerate(picks):  # a fresh train, killed
        out = tmp_path / f"fresh{i}"
        killed = run(train_process(out, data_dir), env=killed_at(name, int(nth)))
        assert killed.returncode == -signal.SIGKILL, (name, nth, killed.stderr)
        intact(out)
    out = tmp_path / f"fresh{len(picks) // 2}"  # killed mid-run: now a chain of resumes, each killed
    resume_moments = [("run.opened", 1), ("metrics.rewritten", 1), ("metrics.replaced", 1), ("metrics.written", 3),
                      ("checkpoint.saved", 1), ("metrics.written", 7), ("checkpoint.saved", 2),
                      ("metrics.written", 12), ("checkpoint.saved", 3), ("summary.written", 1)]
    for name, nth in resume_moments:
        killed = run(train_process(out, data_dir, "--resume"), env=killed_at(name, nth))
        assert killed.returncode in (-signal.SIGKILL, 0), (name, nth, killed.stderr)
        intact(out)
    finished = run(train_process(out, data_dir, "--resume"))
    assert finished.returncode == 0, finished.stderr
    assert_same_run(out, reference)


def test_a_full_disk_while_logging_metrics_keeps_the_checkpoint_and_says_so(tmp_path, data_dir, reference,
                                                                            monkeypatch):
    import errno

    import guppy_jax.training.loop as trainer

    class FullAfter:  # the log's file object, on a disk that fills up at the 13th record
        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, text):
            self.writes += 1
            if self.writes >= 13:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.file.write(text)

        def __getattr__(self, name):
            return getattr(self.file, name)

    class FillingLog(trainer.MetricsLog):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.file = FullAfter(self.file)
    monkeypatch.setattr(trainer, "MetricsLog", FillingLog)
    out = tmp_path / "run"
    with pytest.raises(TrainError) as failed:
        train_here(out, data_dir)
    message = one_line(str(failed.value))
    assert "the disk is full" in message and "checkpoint 10" in message and "--resume" in message
    assert json.loads((out / "summary.json").read_text())["status"] == "save-failed"
    monkeypatch.undo()
    train_here(out, data_dir, resume=True)
    assert_same_run(out, reference)


def test_a_run_without_its_tokenizer_never_resumes_on_another_tokenizer(tmp_path, data_dir):
    out, other = tmp_path / "run", tmp_path / "mochi"
    prepare(persona_path=REPO / "data" / "personas" / "mochi.toml", out=other, samples=600, seed=0,
            vocab_size=CFG.model.vocab_size, quiet=True)
    train_here(out, data_dir, stop_after=5)
    (out / "tokenizer.json").unlink()
    refused = run(train_process(out, other, "--resume"))
    assert refused.returncode == 1 and "tokenizer.json is missing" in one_line(refused.stderr)
    assert not (out / "tokenizer.json").exists()
    # the same tokenizer, proven by the digest config.json recorded, is put back with a note
    restored = run(train_process(out, data_dir, "--resume"))
    assert restored.returncode == 0 and "restored from" in restored.stderr, restored.stderr
    assert (out / "tokenizer.json").read_bytes() == (data_dir / "tokenizer.json").read_bytes()


def test_a_sequence_length_with_nothing_to_predict_is_refused(tmp_path, data_dir, capsys):
    code = train_cmd.main([*FLAGS, "--seq-len", "1", "--run-dir", str(tmp_path / "run"), "--data-dir", str(data_dir)])
    assert code == 2 and "nothing to predict" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_missing_its_config_is_explained_and_never_pointed_at_force(tmp_path, data_dir):
    out = tmp_path / "run"
    train_here(out, data_dir, stop_after=5)
    (out / "config.json").unlink()
    for extra in ([], ["--resume"]):
        refused = run(train_process(out, data_dir, *extra))
        message = one_line(refused.stderr)
        assert refused.returncode == 1 and "no config.json" in message and "--force" not in message, message
    assert step_dirs(out)  # nothing was deleted


def test_a_run_with_only_its_best_checkpoint_resumes_from_it(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    train_here(out, data_dir, stop_after=20)  # best/ holds the eval at step 20
    shutil.rmtree(out / "checkpoints")
    summary = train_here(out, data_dir, resume=True)
    assert "resuming from the best-eval one" in capsys.readouterr().err
    assert summary["status"] == "finished" and min(metrics_steps(out)) == 1 and summary["step"] == STEPS


def test_sigterm_during_the_closing_samples_exits_130_with_a_word(tmp_path, data_dir):
    trace = tmp_path / "moments.txt"
    cmd = command("train", *FLAGS, "--run-dir", tmp_path / "run", "--data-dir", data_dir)
    proc = subprocess.Popen(cmd, cwd=REPO, env={**ENV, "GUPPY_MOMENTS": str(trace)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: trace.exists() and "samples.start" in trace.read_text(), timeout=240)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "samples skipped; the run is saved" in out and "Traceback" not in err


@pytest.mark.parametrize("flags", [["--stop-after", "0"], ["--mesh", "data=2"]])
def test_bad_loop_and_mesh_flags_are_usage_errors(tmp_path, data_dir, flags):
    result = run(train_process(tmp_path / "run", data_dir, *flags))
    assert result.returncode == 2, result.stderr
    one_line(result.stderr)
