"""Ctrl-C leaves no Fast DDS shared memory behind.

config/fastdds.xml gives every participant a 32 MB shared-memory segment in /dev/shm (RAM). A node
that exits without deleting its participant leaves its segment there for good: the policy node
did so on every Ctrl-C while exiting with 0 (its node handle outlived rclpy's context in
reference cycles that the frozen GC at exit never freed; with the navigation expert also the
ground-truth helper's node), and a few full test runs had filled /dev/shm with 12 GB of them. Each
node here is started as launch starts it, stopped with SIGINT, and every segment it had mapped must
afterwards be gone or still mapped by a live process (another participant's).
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from tests.ros.harness import InstalledNode, wait_for

SHM = Path("/dev/shm")


def mapped_segments(pid: int) -> set[str]:
    """Fast DDS segment files the process has mapped (its own and its peers')."""
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {line.split()[-1] for line in lines if "/dev/shm/fastdds_" in line and "port" not in line}


def mapped_by_anyone(segment: str) -> bool:
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            if segment in Path(maps).read_text():
                return True
        except OSError:
            continue
    return False


CASES = {
    "policy_node, navigation expert": (
        "policy_node",
        {"robot_config": "vln_nav", "policy": "expert_vln_nav", "device": "cpu"},
    ),
    "policy_node, ALOHA expert": (
        "policy_node",
        {"robot_config": "aloha", "policy": "expert_transfer_cube", "device": "cpu"},
    ),
    "nav_sim_node": ("nav_sim_node", {"seed": 3, "image_width": 64, "image_height": 48}),
}


@pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm")
@pytest.mark.parametrize("case", list(CASES))
def test_ctrl_c_deletes_the_nodes_shared_memory(case: str) -> None:
    executable, parameters = CASES[case]
    node = InstalledNode("qvla_ros", executable, parameters)
    try:
        segments = wait_for(
            lambda: mapped_segments(node.proc.pid) or None, 30.0, f"{executable} to map its Fast DDS segment"
        )
        time.sleep(2.0)  # past start-up: timers, the executor and (policy_node) the policy are running
        segments |= mapped_segments(node.proc.pid)
        assert node.alive(), node.log()[-3000:]
    finally:
        code = node.stop()
    log = node.log()
    assert code == 0, f"{executable} exited with {code} on SIGINT:\n{log[-3000:]}"
    left = [s for s in segments if os.path.exists(s) and not mapped_by_anyone(s)]
    assert not left, f"{executable} left {len(left)} Fast DDS segment(s) in /dev/shm: {left}\n{log[-2000:]}"
