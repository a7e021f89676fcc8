#!/usr/bin/env bash
# The README's main command: set everything up, then run the main job without a robot or downloaded
# weights: the MuJoCo ALOHA sim node + the qvla policy node over ROS 2 (sim time), a few TransferCube
# episodes, a live summary, and a report in demo_out/ (summary.md, latency.png, frames/*.png).
#   scripts/demo.sh                                  # Qwen-VLA, tiny random checkpoint built locally
#   scripts/demo.sh --policy expert_transfer_cube    # the scripted expert through the same stack
#   scripts/demo.sh --help                           # episodes, image size, chunking mode, ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec "$ROOT/install/qvla_ros/lib/qvla_ros/qvla-demo" "$@"
