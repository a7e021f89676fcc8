"""The test-time ROS 2 tools (launch, launch_ros, ros2cli from shared/ros2-extras): how
``scripts/setup.sh --test-tools`` finds and pins them, and that their absence skips the tests that
need them except under CI, where it fails."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.ros import ros2_commands
from tests.ros.harness import REPO

EXTRAS_REQUIREMENTS = REPO / "requirements" / "ros2-extras.txt"


def _requirements(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def _pins(path: Path) -> dict[str, str]:
    return dict(line.split("==") for line in _requirements(path))


def test_extras_requirements_are_pinned_and_installed_as_pinned() -> None:
    lines = _requirements(EXTRAS_REQUIREMENTS)
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", line) for line in lines), lines
    ros2_commands.require_ros2_tools()
    for name, version in _pins(EXTRAS_REQUIREMENTS).items():
        assert importlib.metadata.version(name) == version, name


def test_lark_comes_from_the_locked_lark_parser_only() -> None:
    """launch needs the ``lark`` module; lock.txt's lark-parser provides it. PyPI's ``lark`` would be
    a second distribution writing the same files that rosidl's parser imports."""
    assert _pins(REPO / "requirements" / "lock.txt")["lark-parser"] == "0.12.0"
    assert "lark" not in _pins(EXTRAS_REQUIREMENTS)
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution("lark")


def test_a_wrong_extras_folder_stops_setup_at_once(tmp_path: Path) -> None:
    env = dict(os.environ, QVLA_ROS2_EXTRAS=str(tmp_path))
    proc = subprocess.run(
        [str(REPO / "scripts" / "setup.sh"), "--test-tools"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"QVLA_ROS2_EXTRAS={tmp_path} is not a ros2-extras folder" in proc.stderr
    assert "setup: colcon" not in proc.stdout  # before any long step


def test_an_unknown_setup_option_is_refused() -> None:
    proc = subprocess.run(
        [str(REPO / "scripts" / "setup.sh"), "--test-tool"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "unknown option --test-tool" in proc.stderr


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_tools_skip_but_fail_under_ci(ci: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ros2_commands.shutil, "which", lambda name: None)  # no ros2 on PATH
    monkeypatch.setenv("CI", ci)
    outcome = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(outcome, match="the ros2 command"):
        ros2_commands.require_ros2_tools()
