"""Fixtures for integration tests: a tiny random checkpoint built locally, and the installed share dir."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qvla_core.cli.build_checkpoint import tiny_random_command
from tests.ros.harness import INSTALL, REPO

ROBOTS = sorted((REPO / "config" / "robots").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def _robot_side_without_gc_pauses() -> Iterator[None]:
    """This process plays the robot (it records when each command arrives). By the time the ROS tests
    run it holds everything earlier tests imported (torch, transformers, MuJoCo: over a million
    objects), and one full garbage collection over that stalls its threads for up to a second, so
    a command that arrived on time was recorded late. A robot's driver has no such pauses: what
    exists when a module starts is frozen out of the collector (new objects are still collected)."""
    gc.collect()
    gc.freeze()
    yield


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen-VLA checkpoint with norm stats for every shipped robot (built, never downloaded)."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    cmd = tiny_random_command(str(out), [str(r) for r in ROBOTS], backbone="qwen2_5_vl", seed=0)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def config_dir() -> Path:
    path = INSTALL / "qvla_ros" / "share" / "qvla_ros" / "config" / "robots"
    assert path.is_dir(), f"{path} missing: run scripts/setup.sh"
    return path
