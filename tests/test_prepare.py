"""The prepare command: a persona file in, a data directory out."""
import json
from pathlib import Path

from guppy_jax.persona import load_persona
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
