"""scripts/bench_data.py measures prepare and train as separate processes at each corpus size;
scripts/grain_vs_store.py times our sampler over the token store (and grain, where installed)."""
import json


def test_the_data_scaling_benchmark_measures_prepare_and_train_at_each_size(script, tmp_path, capsys):
    bench = script("bench_data")
    assert bench.main(["--sizes", "0.4", "0.8", "--repeats", "2", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    small, large = result["rows"]
    assert 0.35 < small["mb"] < 0.45 and 0.75 < large["mb"] < 0.85
    assert large["conversations"] > 1.8 * small["conversations"]
    for row in result["rows"]:
        assert row["train_status"] == "finished" and row["store_mb"] > 0
        assert len(row["train"]["each_s"]) == 2 and min(row["train"]["each_s"]) <= row["train"]["s"]
        for what in ("prepare", "train"):
            assert row[what]["s"] > 0 and 50 < row[what]["peak_mb"] < 24_000  # a real process's numbers
    assert set(result["ratios"]) == {"prepare_s_per_mb_largest_over_smallest", "prepare_peak_mb_at_largest",
                                     "train_s_largest_over_smallest", "train_peak_largest_over_smallest"}
    assert "train_peak_largest_over_smallest" in capsys.readouterr().out


def test_the_loader_comparison_times_the_store_and_resumes_it_exactly(script, data_dir, capsys):
    assert script("grain_vs_store").main(["--data", str(data_dir), "--batches", "5", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "store: first batch in" in out and "resumes exactly: True" in out
    assert "grain: not installed" in out or "grain (packed) over store" in out  # grain is not a dependency
