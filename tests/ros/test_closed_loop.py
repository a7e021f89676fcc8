"""The whole stack in the loop, in CI: the installed sim node and policy node (scripted expert, sim
time) started exactly as ``aloha_sim.launch.py`` / the demo start them, driven like an operator
would through ROS services, with small images so it fits the CI budget.

What must hold: commands reach the sim and move the arms the way they were commanded, and one
TransferCube episode ends in success, detected from the sim's reward.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed")


from qvla_core.robot_io import load_robot_config  # noqa: E402
from qvla_ros.tools.bringup import sim_demo_specs, write_robot_variant  # noqa: E402
from qvla_ros.tools.node_process import NodeProcess  # noqa: E402
from qvla_ros.tools.sim_monitor import CommandRecord, SimMonitor, run_episode  # noqa: E402
from qvla_ros.tools.sim_session import SimSession  # noqa: E402
from tests.ros.harness import INSTALL, REPO  # noqa: E402

WIDTH, HEIGHT = 160, 120
RIGHT_CTRL = "/follower_right/arm_controller/joint_trajectory"
RIGHT_STATE = "/follower_right/joint_states"


@pytest.fixture(scope="module")
def small_aloha(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """aloha.yaml with every camera at 160x120 (what the sim renders and the policy then expects)."""
    dest = tmp_path_factory.mktemp("robot") / "aloha_small.yaml"
    return write_robot_variant(REPO / "config/robots/aloha.yaml", dest, camera_size=(WIDTH, HEIGHT))


@pytest.fixture(scope="module")
def loop(small_aloha: Path) -> Iterator[tuple[SimMonitor, list[NodeProcess]]]:
    values = {
        "robot_config": str(small_aloha),
        "policy": "expert_transfer_cube",
        "device": "cpu",
        "dtype": "float32",
        "image_width": str(WIDTH),
        "image_height": str(HEIGHT),
        "seed": "4",
    }
    specs = sim_demo_specs(values, INSTALL / "qvla_ros/share/qvla_ros/config/robots")
    session = SimSession(specs, load_robot_config(small_aloha))
    try:
        session.wait_ready(timeout=120.0)
        yield session.monitor, session.procs
    finally:
        codes = session.close()
    assert not session.stop_errors, session.stop_errors
    for exe, code in codes.items():
        log = session.logs[exe]
        assert code == 0, f"{exe} exited with {code} on SIGINT:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]


def _state_at(monitor: SimMonitor, topic: str, t: float) -> np.ndarray:
    with monitor.lock:
        return next(q for s, _, q in monitor.states[topic] if s >= t - 1e-6)


def test_an_expert_episode_through_the_stack_succeeds(loop: tuple[SimMonitor, list[NodeProcess]]) -> None:
    monitor, procs = loop
    result = run_episode(monitor, "transfer the cube", seconds=5.0)
    policy_log = procs[1].log()
    with monitor.lock:
        frames_seen = len(monitor.frames)
    # One full run saw "stale input (cam_high never)" here (the test passes alone): say whether the
    # sim published camera frames at all (the test process subscribes to them too) and what it logged.
    assert result.chunks >= 20 and result.commands >= 40, (
        result,
        f"camera frames the test process received: {frames_seen}",
        policy_log[-2000:],
        procs[0].log()[-2000:],
    )
    assert result.success, f"{result}\n{policy_log[-3000:]}"
    assert 3.0 < (result.time_to_success or 0.0) < 5.0  # the expert's schedule hands over at ~3.9 s

    # Commands reached the sim and moved the right arm the way they said: over each of the first
    # trajectories (the approach), the measured motion points where the commanded target does.
    with monitor.lock:
        commands = [c for c in monitor.commands if c.topic == RIGHT_CTRL and result.start < c.start]
    approach = [c for c in commands if c.start < result.start + 1.0]
    assert len(approach) >= 5
    agree = [_agreement(monitor, c) for c in approach]
    moved = [a for a in agree if a is not None]
    assert len(moved) >= 3 and min(moved) > 0.8, agree


def _agreement(monitor: SimMonitor, cmd: CommandRecord, span: float = 0.3) -> float | None:
    """Cosine between the commanded and the measured arm motion over ``span`` from the start."""
    tfs = np.asarray(cmd.time_from_start)
    k = int(np.searchsorted(tfs, span))
    if k >= len(tfs):
        return None
    before = _state_at(monitor, RIGHT_STATE, cmd.start)[:6]
    after = _state_at(monitor, RIGHT_STATE, cmd.start + tfs[k])[:6]
    want = cmd.positions[k, :6] - before
    got = after - before
    if np.linalg.norm(want) < 0.02:
        return None  # nearly still: no direction to compare
    return float(want @ got / (np.linalg.norm(want) * np.linalg.norm(got) + 1e-12))
