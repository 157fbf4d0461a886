"""How prepare and train scale with the corpus: time and peak memory at several corpus sizes.

    python scripts/bench_data.py                         # 8, 80 and 400 MB (about 15 minutes on 2 cores)
    python scripts/bench_data.py --sizes 8 80 --json data_scaling.json

For each size it writes a corpus of Guppy conversations as JSONL (the persona generator, a new
seed every 20,000 conversations, until the file has the size), then runs, each as its own
process:

    python -m guppy_jax.prepare --from CORPUS --out DATA --quiet
    python -m guppy_jax.train --preset tiny --steps 4 --data-dir DATA --run-dir RUN --quiet

and records each one's wall time and peak resident memory (the process's own, from wait4;
train runs --repeats times, each a fresh start, and its median time and largest peak count),
then prints a table and the ratios the token store is meant to keep: prepare's seconds per MB
at the largest size over the smallest's (linear time: 1.0), prepare's peak memory at the
largest size, and train's time and memory at the largest over the smallest (flat: 1.0).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from guppy_jax.core.paths import DEFAULT_PERSONA  # noqa: E402
from guppy_jax.data.persona import conversations, load_persona  # noqa: E402

CHUNK = 20_000  # conversations generated per seed


def write_corpus(path: Path, megabytes: float) -> int:
    """Guppy conversations as JSONL until the file holds `megabytes` MB; returns how many."""
    persona, target, n = load_persona(DEFAULT_PERSONA), int(megabytes * 1e6), 0
    with open(path, "w", encoding="utf-8") as f:
        seed = 0
        while f.tell() < target:
            for record in conversations(persona, CHUNK, seed):
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
                if f.tell() >= target:
                    break
            seed += 1
    return n


def measure(argv: list[str]) -> dict:
    """Run argv as a child process: its wall time (s), peak resident memory (MB) and exit code."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {code}:\n{err}")
    return {"s": round(wall, 2), "peak_mb": round(usage.ru_maxrss / 1024, 1)}  # Linux: ru_maxrss in KiB


def run_size(megabytes: float, work: Path, repeats: int = 3) -> dict:
    """One corpus size: write it, prepare it once, train on it `repeats` times (the median time
    counts: the first train anywhere may also compile the tiny model's programs into JAX's
    persistent cache, which the later ones reuse)."""
    corpus, data, run = work / f"corpus-{megabytes:g}.jsonl", work / f"data-{megabytes:g}", work / f"run-{megabytes:g}"
    n = write_corpus(corpus, megabytes)
    py = sys.executable
    prepare = measure([py, "-m", "guppy_jax.prepare", "--from", str(corpus), "--out", str(data), "--quiet"])
    trains = []
    for _ in range(repeats):  # each into a new run directory: a fresh start every time
        shutil.rmtree(run, ignore_errors=True)
        trains.append(measure([py, "-m", "guppy_jax.train", "--preset", "tiny", "--steps", "4", "--data-dir",
                               str(data), "--run-dir", str(run), "--quiet"]))
    train = {"s": statistics.median(t["s"] for t in trains), "peak_mb": max(t["peak_mb"] for t in trains),
             "each_s": [t["s"] for t in trains]}
    status = json.loads((run / "summary.json").read_text())["status"]
    row = {"mb": round(corpus.stat().st_size / 1e6, 1), "conversations": n, "prepare": prepare, "train": train,
           "store_mb": round(sum(p.stat().st_size for p in data.glob("*.tokens")) / 1e6, 1), "train_status": status}
    corpus.unlink()
    shutil.rmtree(data)
    shutil.rmtree(run)
    return row


def ratios(rows: list[dict]) -> dict:
    small, large = rows[0], rows[-1]
    per_mb = lambda row: row["prepare"]["s"] / row["mb"]  # noqa: E731
    return {"prepare_s_per_mb_largest_over_smallest": round(per_mb(large) / per_mb(small), 2),
            "prepare_peak_mb_at_largest": large["prepare"]["peak_mb"],
            "train_s_largest_over_smallest": round(large["train"]["s"] / small["train"]["s"], 2),
            "train_peak_largest_over_smallest": round(large["train"]["peak_mb"] / small["train"]["peak_mb"], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[8, 80, 400], metavar="MB",
                        help="corpus sizes in MB, smallest first (default: 8 80 400)")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary one, removed)")
    parser.add_argument("--repeats", type=int, default=3, help="train starts timed per size (default: 3)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    import tempfile
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_data-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'corpus':>9} {'conversations':>13} {'prepare s':>10} {'prepare MB':>11} {'train s':>8} "
          f"{'train MB':>9} {'store MB':>9}")
    try:
        for megabytes in sorted(args.sizes):
            row = run_size(megabytes, work, args.repeats)
            rows.append(row)
            print(f"{row['mb']:>6} MB {row['conversations']:>13,} {row['prepare']['s']:>10} "
                  f"{row['prepare']['peak_mb']:>11} {row['train']['s']:>8} {row['train']['peak_mb']:>9} "
                  f"{row['store_mb']:>9}", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "rows": rows, "ratios": ratios(rows)}
    for name, value in result["ratios"].items():
        print(f"{name}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
