"""Where a trained checkpoint came from: the command, the datasets' fingerprints, the code's commit.

Written into the checkpoint's ``policy_config.json`` under ``training`` so that a checkpoint found
on a robot months later says how to make it again.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import qvla_core


def git_commit(start: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the qvla source tree (``+dirty`` with uncommitted changes), or
    ``unknown`` (an installed copy outside any repository)."""
    candidates = [start] if start else []
    candidates += [Path(qvla_core.__file__).resolve().parent, Path.cwd()]
    for where in candidates:
        try:
            head = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            if head.returncode != 0:
                continue
            dirty = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                check=False,
                capture_output=True,
                text=True,
                timeout=10,
            )
            return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


def provenance(
    *,
    command: Sequence[str],
    base_checkpoint: Path,
    datasets: list[dict[str, Any]],
    config: dict[str, Any],
    step: int,
    commit: str,
    started: float,
) -> dict[str, Any]:
    return {
        "command": list(command),
        "base_checkpoint": str(base_checkpoint),
        "datasets": datasets,
        "step": step,
        "steps": config["schedule"]["steps"],
        "train": config["train"],
        "config": config,
        "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "machine": platform.machine(),
        },
    }
