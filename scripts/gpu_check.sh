#!/usr/bin/env bash
# One prepared GPU check (see BENCHMARKS.md, "The GPU check"). On a machine with an NVIDIA GPU:
#
#     bash scripts/gpu_check.sh [OUT.json]        # default: gpu_check.json
#
# 0. prepares the Guppy data and tokenizer in a scratch directory (timed on its own, so that
#    data generation is not in the training's wall time),
# 1. python -m guppy_jax.train --preset guppy-9m (10,000 steps, --dtype auto), timed,
# 2. python -m guppy_jax.bench --device gpu --json (JAX against the reference's eager,
#    compiled and AMP steps, on the same work),
# 3. the parity report at "highest" matmul precision (JAX on the GPU against the reference),
# and writes all of it into one JSON. Each part has its own time limit, and a part that fails
# or runs out of time does not stop the others: the JSON's "parts" records each one's exit
# status (124: out of time) and wall time, and the script exits 1 if any part failed.
#
# GPU_CHECK_ARGS adds flags to the training run, GPU_CHECK_DEVICE sets bench's --device and
# GPU_CHECK_PARITY the parity model (a smoke run on a CPU: GPU_CHECK_DEVICE=cpu
# GPU_CHECK_ARGS="--preset tiny" GPU_CHECK_PARITY=micro bash scripts/gpu_check.sh).
# GPU_CHECK_LOGS=DIR keeps each part's log there; GPU_CHECK_TIMEOUTS="prepare train bench parity"
# sets the limits in seconds (default "60 180 240 240"); GPU_CHECK_PYTHON picks the
# interpreter (default: python, or python3 where there is no python).
set -uo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-gpu_check.json}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
logs="${GPU_CHECK_LOGS:-$work}"
mkdir -p "$logs"
py="${GPU_CHECK_PYTHON:-$(command -v python || command -v python3)}"
device="${GPU_CHECK_DEVICE:-gpu}"
parity_model="${GPU_CHECK_PARITY:-guppy-9m}"
read -r t_prepare t_train t_bench t_parity <<< "${GPU_CHECK_TIMEOUTS:-60 180 240 240}"
preset=guppy-9m
[[ "${GPU_CHECK_ARGS:-}" == *"--preset tiny"* ]] && preset=tiny
data="$work/data"
export PYTHONUNBUFFERED=1

# part NAME LIMIT COMMAND...: run it under `timeout`, its output to the terminal and to
# $logs/NAME.log; append "NAME rc seconds" to $work/parts.txt
part() {
    local name=$1 limit=$2 start end rc
    shift 2
    echo "[gpu_check] $name (limit ${limit} s): $*"
    start=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    rc=$?
    end=$(date +%s%N)
    echo "$name $rc $(( (end - start) / 1000000 ))" >> "$work/parts.txt"
    echo "[gpu_check] $name: exit $rc"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$work/gpu.txt" 2>/dev/null \
    || echo "no nvidia-smi" > "$work/gpu.txt"

vocab=$("$py" -c 'import sys; from guppy_jax.core.config import PRESETS; print(PRESETS[sys.argv[1]].model.vocab_size)' \
        "$preset")
part prepare "$t_prepare" "$py" -m guppy_jax.prepare --out "$data" --vocab-size "$vocab" --quiet

# shellcheck disable=SC2086
part train "$t_train" "$py" -m guppy_jax.train --preset guppy-9m --data-dir "$data" --run-dir "$work/run" \
    --force ${GPU_CHECK_ARGS:-}

part bench "$t_bench" "$py" -m guppy_jax.bench --device "$device" --preset "$preset" --data-dir "$data" \
    --json "$work/bench.json" --quiet

part parity "$t_parity" "$py" -m parity_tests.report --model "$parity_model" --markdown

"$py" - "$work" "$out" "$logs" <<'PY'
import json, platform, sys
from pathlib import Path
import jax
work, out, logs = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

def read(path, how=lambda text: text):
    return how(path.read_text()) if path.exists() else None

parts = {}
for line in (work / "parts.txt").read_text().splitlines():
    name, rc, ms = line.split()
    parts[name] = {"exit": int(rc), "wall_s": round(int(ms) / 1000, 1)}
    if rc != "0":  # the end of what it printed, for a JSON read without the logs
        parts[name]["log_tail"] = (logs / f"{name}.log").read_text(errors="replace")[-3000:]
result = {
    "gpu": (work / "gpu.txt").read_text().strip(),
    "jax": jax.__version__, "devices": [str(d.device_kind) for d in jax.devices()],
    "host": platform.node(),
    "parts": parts,
    "failed": [name for name, p in parts.items() if p["exit"] != 0],
    "bench": read(work / "bench.json", json.loads),
    "train_wall_s": parts["train"]["wall_s"] if parts["train"]["exit"] == 0 else None,
    "train_summary": read(work / "run" / "summary.json", json.loads),
    "parity_markdown": read(logs / "parity.log"),  # exit 1: it ran, and some quantity is out of tolerance
}
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"[gpu_check] wrote {out}: train wall {result['train_wall_s']} s; failed parts: {result['failed'] or 'none'}")
sys.exit(1 if result["failed"] else 0)
PY
