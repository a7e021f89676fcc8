"""``qvla-collect`` as a user runs it: the installed sim, policy (scripted expert) and recorder nodes,
one seeded TransferCube episode through ROS 2, converted into a dataset that loads back."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed")

from qvla_core.data.dataset import LeRobotDataset  # noqa: E402
from qvla_core.robot_io import load_robot_config  # noqa: E402
from tests.ros.harness import installed_executable  # noqa: E402


def collect(*args: str, timeout: float = 240.0) -> subprocess.CompletedProcess[str]:
    exe = installed_executable("qvla_ros", "qvla-collect")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_one_expert_episode_becomes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "collect"
    proc = collect(
        "--seeds", "7", "--out", str(out), "--cameras", "cam_high", "--image-size", "128x96",
        "--episode-seconds", "4.5",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert "expert successes: 1/1" in summary and "frames dropped: 0 " in summary, summary
    config = load_robot_config(out / "robot.yaml")
    assert config.embodiment.camera_names == ("cam_high",)
    assert (config.embodiment.cameras[0].width, config.embodiment.cameras[0].height) == (128, 96)
    assert config.ros.recording is not None and config.ros.recording.actions.source == "commanded_trajectory"
    ds = LeRobotDataset(out / "dataset", config.embodiment)
    assert ds.episodes == (0,) and ds.episode(0).success is True
    assert 4.5 * 50 <= len(ds) <= 4.5 * 50 + 10  # the episode's control ticks (stop comes a little late)
    first, last = ds[0], ds[len(ds) - 1]
    assert "cube" in first.observation.instruction
    moved = abs(last.observation.state - first.observation.state).max()
    assert moved > 0.3, moved  # the arms moved between the first and the last frame


def test_bad_arguments_fail_before_anything_starts(tmp_path: Path) -> None:
    proc = collect("--episodes", "2", "--seeds", "1-3", "--out", str(tmp_path / "a"), timeout=60)
    assert proc.returncode == 2 and "--episodes 2 but --seeds gives 3 seeds" in proc.stderr
    proc = collect("--seeds", "1", "--cameras", "cam_top", "--out", str(tmp_path / "b"), timeout=60)
    assert proc.returncode == 1 and "cam_top" in proc.stderr and "cam_high" in proc.stderr
