"""The prepare command: a persona file in, a data directory out."""
import json
from pathlib import Path

from guppy_jax.data.persona import load_persona
from guppy_jax.prepare import main as prepare_main

PERSONAS = Path(__file__).resolve().parent.parent / "data" / "personas"


def test_second_persona_produces_its_own_dataset(tmp_path):
    assert prepare_main(["--persona", str(PERSONAS / "mochi.toml"), "--out", str(tmp_path),
                         "--samples", "400", "--seed", "1"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    cats = {r["category"] for r in lines}
    assert cats <= {t.name for t in load_persona(PERSONAS / "mochi.toml").topics} and "play" in cats
    assert not cats & {"bubbles", "filter", "algae"}
    assert (tmp_path / "tokenizer.json").exists()


def test_prepare_is_byte_identical_for_a_seed(tmp_path):
    for sub in ("a", "b"):
        assert prepare_main(["--out", str(tmp_path / sub), "--samples", "2000", "--seed", "7"]) == 0
    for name in ("train.jsonl", "eval.jsonl", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_prepare_reports_a_bad_persona(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[pools]\nfood = ["a"]\n[[topics]]\nname = "t"\nprompts = ["hi"]\n'
                   'responses = ["{cake}"]\n')
    assert prepare_main(["--persona", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "unknown slot {cake}" in capsys.readouterr().err


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def hub_rows(n: int, start: int = 0) -> list[dict]:
    """The published layout: {"input", "output", "category"}."""
    foods = ["flakes", "bloodworms", "pellets", "peas"]
    return [{"input": f"do you want {foods[i % 4]} today {i}", "output": f"yes. {foods[i % 4]} are food. "
             f"i love food {i}.", "category": "food"} for i in range(start, start + n)]


def test_your_own_folder_prepares_and_trains_with_the_line_it_prints(tmp_path, capsys):
    from guppy_jax.train import main as train_main
    write_rows(tmp_path / "src" / "train.jsonl", hub_rows(120))
    write_rows(tmp_path / "src" / "test.jsonl", hub_rows(20, start=120))
    out = tmp_path / "data"
    assert prepare_main(["--from", str(tmp_path / "src"), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert f"train {summary['train']['samples']} samples, {summary['train']['tokens']} tokens" in report
    assert "0 samples longer than the context length (128 tokens)" in report
    assert report.splitlines()[0] == (f"{tmp_path / 'src'}: train 120 samples from train.jsonl; eval 20 samples "
                                      f"from test.jsonl")
    train_line = report.splitlines()[-1]
    assert train_line == f"  train with: python -m guppy_jax.train --data-dir {out}"  # no --vocab-size
    args = train_line.split("python -m guppy_jax.train ")[1].split()
    assert train_main([*args, "--preset", "tiny", "--run-dir", str(tmp_path / "run"), "--steps", "4",
                       "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_prepare_from_leaves_out_bad_lines_or_with_strict_stops_and_refuses_mixed_flags(tmp_path, capsys):
    write_rows(tmp_path / "mine.jsonl", hub_rows(10))
    with open(tmp_path / "mine.jsonl", "a") as f:
        f.write('{"input": "hi", "output": 7}\n')
    bad = f"{tmp_path / 'mine.jsonl'}:11: missing or non-string field 'output'"
    assert prepare_main(["--from", str(tmp_path / "mine.jsonl"), "--out", str(tmp_path / "o")]) == 0
    out, err = capsys.readouterr()
    assert f"left out: {bad}" in err and "1 record left out as unusable" in out and "reading" in err  # the bar
    assert prepare_main(["--from", str(tmp_path / "mine.jsonl"), "--out", str(tmp_path / "s"), "--strict"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {bad}"
    assert prepare_main(["--from", str(tmp_path / "mine.jsonl"), "--persona", "x.toml"]) == 2
    assert "leave out --persona" in capsys.readouterr().err
    assert prepare_main(["--from", str(tmp_path / "mine.jsonl"), "--eval-fraction", "1"]) == 2


def test_prepare_from_a_pooled_folder_refuses_to_write_into_it(tmp_path, capsys):
    src = tmp_path / "chats"
    write_rows(src / "a.jsonl", hub_rows(10))
    write_rows(src / "b.jsonl", hub_rows(10, start=10))
    for out in (src, src / "prepared"):
        assert prepare_main(["--from", str(src), "--out", str(out)]) == 2
        assert "the folder --from reads" in capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == ["a.jsonl", "b.jsonl"]


def test_prepare_refuses_an_out_holding_other_files_since_it_replaces_the_whole_directory(tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "ideas.txt").write_text("a fish that talks\n")
    (out / "summary.json").write_text("{}\n")
    assert prepare_main(["--out", str(out), "--samples", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --out {out} holds files that are not a data directory's (ideas.txt): prepare replaces "
                   f"the whole directory, so choose a new or empty --out, or move them out first")
    assert sorted(p.name for p in out.iterdir()) == ["ideas.txt", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no lock file or temporary directory left
