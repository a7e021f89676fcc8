"""qvla_core must import and work where rclpy does not exist (design card: never imports rclpy)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# Blocks every ROS Python package, then imports each qvla_core module and runs a core test file.
_PROBE = r"""
import importlib, pkgutil, sys
BLOCKED = ("rclpy", "rcl_interfaces", "std_msgs", "sensor_msgs", "trajectory_msgs", "qvla_msgs",
           "geometry_msgs", "nav_msgs", "builtin_interfaces", "launch", "launch_ros", "cv_bridge")

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: qvla_core must not import ROS")
        return None

sys.meta_path.insert(0, _Block())
import qvla_core
for mod in pkgutil.walk_packages(qvla_core.__path__, "qvla_core."):
    importlib.import_module(mod.name)
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def test_qvla_core_imports_and_tests_pass_without_ros() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        # A clean path: only qvla_core's sources and the repository (for tests/), no install space.
        "PYTHONPATH": f"{REPO / 'src' / 'qvla_core'}:{REPO}",
        "_ROS_WHEELS_BOOTSTRAP_COMPLETE": "1",
    }
    core_tests = [str(REPO / "tests" / "core" / "test_embodiment.py")]
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *core_tests],
        env=env,
        cwd=REPO,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout
