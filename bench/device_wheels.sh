#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels bench/gpu_check.sh installs on the GPU machine,
# which has Python 3.12 with torch, accelerate, numpy, safetensors, tokenizers, huggingface_hub and
# pyyaml but no PyPI: pydantic (qvla_core's config schema), transformers 5.24 (the version qvla is
# tested with; the machine's 5.17 lacks APIs the backbone code uses), peft (LoRA), and
# flash-linear-attention (Qwen3.5's gated-delta-rule kernels). Pinned to requirements/lock.txt.
# Output: .cache/device_wheels (ignored by git; carried to the device with `carry`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/device_wheels"
lock() { grep -i "^$1==" "$ROOT/requirements/lock.txt" | cut -d= -f3; }
WHEELS=(
  "transformers==$(lock transformers)"
  "pydantic==$(lock pydantic)"
  "pydantic-core==$(lock pydantic-core)"
  "annotated-types==$(lock annotated-types)"
  "typing-inspection==$(lock typing-inspection)"
  "typing-extensions==$(lock typing-extensions)"
  "peft==$(lock peft)"
  # Not in the lock (GPU-only, Triton): the release current when this was written.
  "flash-linear-attention==0.6.0"
  "fla-core==0.6.0"
)
mkdir -p "$DEST"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
du -sh "$DEST"
