#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (docs/bench/gpu_check.md): the gpu-marked unit tests,
# policy latency at the full preset (Qwen3.5-4B and Qwen3-VL-4B shapes + the 1.15B DiT, bf16,
# eager / torch.compile / CUDA graph), training-step throughput (frozen backbone, LoRA), tables
# under $OUT, all within --budget-s (default 480 s). Nothing is fetched there: the Python packages
# the machine lacks come as wheels in .cache/device_wheels (bench/device_wheels.sh fetches them here).
#
#   on the device:   bash bench/gpu_check.sh                       (carry .cache/device_wheels)
#   CPU rehearsal:   OUT=/tmp/gpu_check bash bench/gpu_check.sh --device cpu --preset tiny
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
WHEELS="$ROOT/.cache/device_wheels"
if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  # The machine's own transformers/typing-extensions are older than what qvla is tested with: ours first.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/qvla_site "$WHEELS"/*.whl >"$OUT/wheels.log" 2>&1 || { cat "$OUT/wheels.log"; exit 1; }
  export PYTHONPATH="/tmp/qvla_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT/src/qvla_core:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec python3 "$ROOT/bench/gpu_check.py" --out "$OUT" "$@"
