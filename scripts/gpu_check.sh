#!/usr/bin/env bash
# One prepared GPU check (see BENCHMARKS.md, "The GPU check"). On a machine with an NVIDIA GPU:
#
#     bash scripts/gpu_check.sh [OUT.json]        # default: gpu_check.json
#
# 1. the parity report at "highest" matmul precision (JAX on the GPU against the reference),
# 2. python -m guppy_jax.bench --device gpu --json (JAX against the reference's eager, compiled
#    and AMP steps, on the same work),
# 3. python -m guppy_jax.train --preset guppy-9m (10,000 steps, --dtype auto), timed,
# and writes all three into one JSON. GPU_CHECK_ARGS adds flags to the training run and
# GPU_CHECK_DEVICE sets bench's --device (a smoke run on a CPU: GPU_CHECK_DEVICE=cpu
# GPU_CHECK_ARGS="--preset tiny" GPU_CHECK_PARITY=micro bash scripts/gpu_check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-gpu_check.json}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
device="${GPU_CHECK_DEVICE:-gpu}"
parity_model="${GPU_CHECK_PARITY:-guppy-9m}"

echo "[gpu_check] 1/3 parity report ($parity_model, highest precision)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$work/gpu.txt" 2>/dev/null \
    || echo "no nvidia-smi" > "$work/gpu.txt"
python -m parity_tests.report --model "$parity_model" --markdown | tee "$work/parity.md"

echo "[gpu_check] 2/3 bench on $device"
bench_preset=guppy-9m
[[ "${GPU_CHECK_ARGS:-}" == *"--preset tiny"* ]] && bench_preset=tiny
python -m guppy_jax.bench --device "$device" --preset "$bench_preset" --json "$work/bench.json" --quiet

echo "[gpu_check] 3/3 train guppy-9m, timed"
start=$(date +%s.%N)
# shellcheck disable=SC2086
python -m guppy_jax.train --preset guppy-9m --run-dir "$work/run" --force ${GPU_CHECK_ARGS:-} \
    | tee "$work/train.txt"
end=$(date +%s.%N)

python - "$work" "$out" "$start" "$end" <<'PY'
import json, platform, sys
from pathlib import Path
import jax
work, out, start, end = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
result = {
    "gpu": (work / "gpu.txt").read_text().strip(),
    "jax": jax.__version__, "devices": [str(d.device_kind) for d in jax.devices()],
    "host": platform.node(),
    "parity_markdown": (work / "parity.md").read_text(),
    "bench": json.loads((work / "bench.json").read_text()),
    "train_wall_s": round(end - start, 1),
    "train_summary": json.loads((work / "run" / "summary.json").read_text()),
}
out.write_text(json.dumps(result, indent=1) + "\n")
print(f"[gpu_check] wrote {out}: train wall {result['train_wall_s']} s")
PY
