"""LeRobot's own reader loads our datasets and ours loads LeRobot's (scripts/check_lerobot_compat.py).

Needs LeRobot in a separate venv (it does not fit ours): build it as the script's docstring says,
at /tmp/lerobot-venv or wherever ``QVLA_LEROBOT_PYTHON`` points. ~1.5 min.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LEROBOT_PYTHON = Path(os.environ.get("QVLA_LEROBOT_PYTHON", "/tmp/lerobot-venv/bin/python"))


@pytest.mark.slow
@pytest.mark.skipif(
    not LEROBOT_PYTHON.is_file(),
    reason=f"no LeRobot venv at {LEROBOT_PYTHON} (build it as scripts/check_lerobot_compat.py says, "
    "or set QVLA_LEROBOT_PYTHON)",
)
def test_lerobot_reads_ours_and_we_read_lerobots(tmp_path: Path) -> None:
    script = REPO / "scripts/check_lerobot_compat.py"
    cmd = [sys.executable, str(script), "--lerobot-python", str(LEROBOT_PYTHON), "--keep", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout
    assert proc.stdout.rstrip().endswith("ALL OK")
    assert proc.stdout.count("\nok ") >= 20
