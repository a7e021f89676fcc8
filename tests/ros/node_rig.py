"""One installed policy node (started from a ``policy_node_spec``, as the launch files do) and a
FakeRobot over DDS, shared by the robot and lifecycle integration tests.

The robot starts first, so it records everything the node ever sends.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import Any

from lifecycle_msgs.srv import ChangeState, GetState
from trajectory_msgs.msg import JointTrajectory

from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_msgs.msg import PolicyStatus
from qvla_ros.tools.bringup import NodeSpec, policy_node_spec
from tests.ros.fake_robot import FakeRobot, to_sec
from tests.ros.harness import InstalledNode, RosPeer, wait_for

INSTRUCTION = "pick up the cube and put it in the bowl"


def spec_for(robot: str | Path, checkpoint: Path | str, config_dir: Path, **overrides: str) -> NodeSpec:
    """What ``ros2 launch qvla_ros aloha.launch.py robot_config:=<robot> device:=cpu dtype:=float32
    checkpoint:=... instruction:=...`` starts (launch arguments are strings)."""
    values = {
        "robot_config": str(robot),
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "dtype": "float32",
        "instruction": INSTRUCTION,
    }
    return policy_node_spec(values | overrides, config_dir, default_robot="aloha")


def is_hold(msg: JointTrajectory) -> bool:
    """The node's hold: header stamp 0 ("start now" for JTC) and one point."""
    return to_sec(msg.header.stamp) == 0.0 and len(msg.points) == 1


def duration_ns(duration: Any) -> int:
    return int(duration.sec) * 1_000_000_000 + int(duration.nanosec)


def joint_limits(config: RobotConfig) -> dict[str, tuple[float, float]]:
    """Per action channel, the range a controller may be commanded to (hardware units for grippers)."""
    limits = {c.name: (c.lower, c.upper) for c in config.embodiment.action}
    for channel, raw in config.ros.gripper_raw_range.items():
        limits[channel] = (min(raw), max(raw))
    return limits


def assert_positions_ok(config: RobotConfig, msg: JointTrajectory, channels: list[str], where: str) -> None:
    limits = joint_limits(config)
    for k, point in enumerate(msg.points):
        assert len(point.positions) == len(channels), f"{where}: point {k} has {len(point.positions)} values"
        for value, channel in zip(point.positions, channels, strict=True):
            lo, hi = limits[channel]
            assert math.isfinite(value), f"{where}: {channel} = {value} at point {k}"
            assert lo - 1e-9 <= value <= hi + 1e-9, f"{where}: {channel} = {value} outside [{lo}, {hi}]"


class NodeRig:
    """FakeRobot + installed policy node; ``close`` checks a clean exit on SIGINT."""

    def __init__(self, spec: NodeSpec, peer_name: str, **robot_args: Any) -> None:
        self.spec = spec
        self.config = load_robot_config(spec.parameters["robot_config"])
        self.peer = RosPeer(peer_name)
        self.robot = FakeRobot(self.peer, self.config, **robot_args)
        self.node = InstalledNode.from_spec(spec)
        self._clients: dict[str, Any] = {}

    def __enter__(self) -> NodeRig:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(check=kind is None)

    def close(self, check: bool = True) -> None:
        self.robot.close()
        self.peer.close()
        code = self.node.stop()
        log = self.node.log()
        if check:
            assert code == 0, f"policy node exited with {code} on SIGINT:\n{log[-3000:]}"
            assert "Traceback" not in log, log[-3000:]

    # ------------------------------------------------------------ what the robot received
    def trajectories(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        return [c for c in self.robot.snapshot().all_trajectories() if c[0] >= since]

    def commands(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        return [c for c in self.trajectories(since) if not is_hold(c[2])]

    def holds(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        return [c for c in self.trajectories(since) if is_hold(c[2])]

    def wait_commands(self, n: int, since: float = 0.0, timeout: float = 60.0) -> None:
        wait_for(
            lambda: len(self.commands(since)) >= n,
            timeout,
            f"{n} trajectories to {self.config.embodiment.name}\n{self.node.log()[-2000:]}",
        )

    def wait_status(self, what: str, predicate: Any, timeout: float = 20.0) -> PolicyStatus:
        def match() -> PolicyStatus | None:
            status = self.robot.last_status()
            return status if status is not None and predicate(status) else None

        return wait_for(match, timeout, f"{what}\n{self.node.log()[-2000:]}")

    # ------------------------------------------------------------ lifecycle services
    def _client(self, srv_type: Any, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = self.peer.node.create_client(srv_type, name)
        return self._clients[name]

    def lifecycle_state(self) -> str:
        reply = self.peer.call(self._client(GetState, "/qvla_policy/get_state"), GetState.Request(), 30.0)
        return str(reply.current_state.label)

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request()
        request.transition.id = transition_id
        # configure loads the model inside the service call: allow for a slow, busy machine
        client = self._client(ChangeState, "/qvla_policy/change_state")
        return bool(self.peer.call(client, request, 90.0).success)
