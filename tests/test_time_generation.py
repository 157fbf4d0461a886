"""scripts/time_generation.py: the decode step and generate() tokens/s, on the tiny preset."""
import re


def test_it_times_the_decode_step_and_each_batch_and_temperature(script, capsys):
    script("time_generation").main(["--preset", "tiny", "--batches", "1", "3", "--temperatures", "0.7", "0",
                                    "--new-tokens", "8", "--calls", "2"])
    out = capsys.readouterr().out
    assert re.search(r"batch-1 decode step -?\d+\.\d+ ms \(median of 7 x 8 steps\)", out), out
    rates = re.findall(r"generate, batch (\d+), temperature (\S+): ([\d,]+) tokens/s", out)
    assert [(b, t) for b, t, _ in rates] == [("1", "0.7"), ("1", "0"), ("3", "0.7"), ("3", "0")], out
    assert all(int(r.replace(",", "")) > 0 for _, _, r in rates), out
