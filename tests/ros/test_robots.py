"""Every robot YAML in config/robots, end to end over DDS: the installed policy node, started with
the parameters the launch files give it (``policy_node_spec``), against a fake robot publishing
that YAML's cameras and joint states. What that robot's controllers or Nav2 receive must be
exactly what its YAML configures. A new YAML is covered automatically."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from geometry_msgs.msg import Pose  # noqa: E402

from qvla_core.embodiment import ChannelKind  # noqa: E402
from qvla_core.robot_io import PoseOutput, TrajectoryOutput  # noqa: E402
from qvla_msgs.msg import ActionChunk  # noqa: E402
from tests.ros.fake_robot import Received, to_sec  # noqa: E402
from tests.ros.harness import REPO, wait_for  # noqa: E402
from tests.ros.node_rig import NodeRig, assert_positions_ok, duration_ns, spec_for  # noqa: E402

ROBOT_YAMLS = sorted((REPO / "config" / "robots").glob("*.yaml"))
TYPES = {
    "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "goal_pose": "geometry_msgs/msg/PoseStamped",
    "path": "nav_msgs/msg/Path",
}


@pytest.fixture(params=ROBOT_YAMLS, ids=[p.stem for p in ROBOT_YAMLS])
def rig(request: pytest.FixtureRequest, tiny_checkpoint: Path, config_dir: Path) -> Iterator[NodeRig]:
    robot: Path = request.param
    # By name, as `robot_config:=widowx` on the command line: the installed copy of that YAML.
    spec = spec_for(robot.stem, tiny_checkpoint, config_dir)
    assert Path(spec.parameters["robot_config"]).name == robot.name
    with NodeRig(spec, f"fake_{robot.stem}") as rig:
        yield rig


def test_robot_receives_what_its_yaml_configures(rig: NodeRig) -> None:
    config = rig.config
    trajectory_outputs = [o for o in config.ros.outputs if isinstance(o, TrajectoryOutput)]
    # Nav2 action outputs need action servers, which this fake robot does not run: they are tested
    # against real ones in test_nav_outputs.py (the node reports the missing server as a fault).
    pose_outputs = [o for o in config.ros.outputs if isinstance(o, PoseOutput) and not o.is_action]
    assert trajectory_outputs or pose_outputs, "a robot YAML without outputs"

    def enough() -> bool:
        got = rig.robot.snapshot()
        traj_ok = all(
            sum(1 for _, m in got.trajectories[o.topic] if to_sec(m.header.stamp) > 0) >= 3
            for o in trajectory_outputs
        )
        pose_ok = all(
            len((got.poses if o.type == "goal_pose" else got.paths)[o.topic]) >= 2 for o in pose_outputs
        )
        return traj_ok and pose_ok

    wait_for(enough, 90.0, f"outputs of {config.embodiment.name}\n{rig.node.log()[-2000:]}")
    time.sleep(0.5)  # each ActionChunk message follows its commands: match only settled messages
    settled = time.time() - 0.3
    got = rig.robot.snapshot()
    _check_publishers(rig)
    if trajectory_outputs:
        _check_trajectories(rig, got, trajectory_outputs, settled)
    if pose_outputs:
        _check_waypoints(rig, got, pose_outputs, settled)
    assert rig.node.alive()


def _check_publishers(rig: NodeRig) -> None:
    """The node publishes commands on exactly the YAML's output topics, with the YAML's types."""
    want = {(o.topic, TYPES[o.type]) for o in rig.config.ros.outputs if o.type in TYPES}

    def published() -> set[tuple[str, str]]:
        pubs = rig.peer.node.get_publisher_names_and_types_by_node("qvla_policy", "/")
        return {(topic, t) for topic, types in pubs for t in types if t in TYPES.values()}

    with contextlib.suppress(TimeoutError):  # graph updates may trail the first messages
        wait_for(lambda: published() == want, 5.0, "the node's publishers in the ROS graph")
    assert published() == want


def _check_trajectories(rig: NodeRig, got: Received, outputs: list[TrajectoryOutput], settled: float) -> None:
    config = rig.config
    emb = config.embodiment
    dt_ns = [round(k * emb.dt * 1e9) for k in range(emb.horizon)]
    chunks = {to_sec(c.header.stamp): c for _, c in got.chunks}
    starts: dict[str, set[float]] = {}
    t_cut = max(t for t, _, _ in got.all_trajectories()) - 0.5
    for out in outputs:
        received = got.trajectories[out.topic]
        assert received, f"{out.topic} received nothing"
        commands = [(t, m) for t, m in received if to_sec(m.header.stamp) > 0.0]
        assert len(commands) >= 3, f"{out.topic}: {len(commands)} trajectories"
        for arrival, msg in commands:  # rows already past are dropped: the first point is still due
            lag = arrival - to_sec(msg.header.stamp)
            assert lag < 0.2, f"{out.topic}: first point due {lag:.3f} s before the trajectory arrived"
        starts[out.topic] = {to_sec(m.header.stamp) for t, m in commands if t <= t_cut}
        for _, msg in received:  # commands and holds alike go to this controller's joints, in its order
            assert list(msg.joint_names) == out.joint_names, f"{out.topic}: {msg.joint_names}"
            assert_positions_ok(config, msg, out.channels, out.topic)
        for arrival, msg in commands:
            assert 1 <= len(msg.points) <= emb.horizon
            for k, point in enumerate(msg.points):
                assert abs(duration_ns(point.time_from_start) - dt_ns[k]) <= 1, (
                    f"{out.topic}: point {k} at {duration_ns(point.time_from_start)} ns, want k*dt"
                )
            if arrival > settled:
                continue
            chunk = chunks.get(to_sec(msg.header.stamp))
            assert chunk is not None, f"{out.topic}: no ActionChunk with the trajectory's first-due stamp"
            assert chunk.embodiment == emb.name and list(chunk.channel_names) == list(emb.action_names)
            assert to_sec(chunk.observation_stamp) <= to_sec(msg.header.stamp)
    # One chunk goes to every controller at once: arm and gripper start together.
    for a in outputs:
        for b in outputs:
            missing = starts[a.topic] - {to_sec(m.header.stamp) for _, m in got.trajectories[b.topic]}
            assert not missing, f"{b.topic} lacks the trajectories {a.topic} got at {sorted(missing)[:3]}"
    assert not rig.robot.rejections, rig.robot.rejections  # the controllers (JTC rules) took every one


def _yaw(pose: Pose) -> float:
    q = pose.orientation
    assert q.x == 0.0 and q.y == 0.0, "a planar waypoint rotates about z only"
    assert math.isclose(q.z * q.z + q.w * q.w, 1.0, abs_tol=1e-9)
    return 2.0 * math.atan2(q.z, q.w)


def _is_stop(out: PoseOutput, msg: Any) -> bool:
    """What a hold sends on a topic: goal_pose at base_link's origin with stamp 0, or an empty path."""
    if out.type == "path":
        return not msg.poses
    p, q = msg.pose.position, msg.pose.orientation
    return to_sec(msg.header.stamp) == 0.0 and (p.x, p.y, p.z, q.x, q.y, q.z, q.w) == (0, 0, 0, 0, 0, 0, 1)


def _check_waypoints(rig: NodeRig, got: Received, outputs: list[PoseOutput], settled: float) -> None:
    emb = rig.config.embodiment
    kinds = {c.kind: (i, c.lower, c.upper) for i, c in enumerate(emb.action)}
    x_col, x_lo, x_hi = kinds[ChannelKind.waypoint_x]
    y_col, y_lo, y_hi = kinds[ChannelKind.waypoint_y]
    yaw = kinds.get(ChannelKind.waypoint_yaw)
    # The node stamps waypoints at the observation: the newest camera frame the robot sent.
    image_stamps = np.array(sorted(s for stamps in rig.robot.sent_images.values() for s in stamps))
    chunks: dict[float, ActionChunk] = {to_sec(c.observation_stamp): c for _, c in got.chunks}
    paths_by_stamp: dict[float, list[Pose]] = {}

    def check_pose(pose: Pose, where: str) -> tuple[float, float, float]:
        p = pose.position
        assert all(math.isfinite(v) for v in (p.x, p.y, p.z)), where
        assert x_lo - 1e-9 <= p.x <= x_hi + 1e-9 and y_lo - 1e-9 <= p.y <= y_hi + 1e-9, f"{where}: {p}"
        assert p.z == 0.0
        heading = _yaw(pose)
        if yaw is not None:
            assert yaw[1] - 1e-6 <= heading <= yaw[2] + 1e-6, f"{where}: yaw {heading}"
        return p.x, p.y, heading

    def check_stamp(stamp: Any, where: str) -> float:
        t = to_sec(stamp)
        nearest = float(image_stamps[np.argmin(np.abs(image_stamps - t))])
        assert abs(nearest - t) < 1e-6, f"{where}: stamp {t:.6f} is no camera frame's stamp"
        return t

    for out in outputs:
        store = got.poses if out.type == "goal_pose" else got.paths
        assert len(store[out.topic]) >= 2, f"{out.topic}: {len(store[out.topic])} messages"
        for arrival, msg in store[out.topic]:
            where = f"{out.topic} ({out.type})"
            if _is_stop(out, msg):
                continue  # a hold (a stale input on a busy machine): checked in test_nav_outputs.py
            assert msg.header.frame_id == out.frame_id, f"{where}: frame {msg.header.frame_id!r}"
            t = check_stamp(msg.header.stamp, where)
            poses = [msg] if out.type == "goal_pose" else list(msg.poses)
            if out.type == "path":
                assert len(poses) == emb.horizon, f"{where}: {len(poses)} poses, horizon {emb.horizon}"
                paths_by_stamp[t] = [p.pose for p in poses]
            values = []
            for k, pose in enumerate(poses):
                assert pose.header.frame_id == out.frame_id and pose.header.stamp == msg.header.stamp
                values.append(check_pose(pose.pose, f"{where} pose {k}"))
            if arrival > settled:
                continue
            # The waypoints are the chunk's rows (clamped to the limits), the goal its last row.
            chunk = chunks.get(t)
            assert chunk is not None, f"{where}: no ActionChunk computed from the observation at {t:.6f}"
            rows = np.array(chunk.actions, dtype=np.float64).reshape(chunk.shape[0], chunk.shape[1])
            rows = rows[-1:] if out.type == "goal_pose" else rows
            for (x, y, heading), row in zip(values, rows, strict=True):
                assert x == pytest.approx(np.clip(row[x_col], x_lo, x_hi), abs=1e-5)
                assert y == pytest.approx(np.clip(row[y_col], y_lo, y_hi), abs=1e-5)
                if yaw is not None:
                    assert heading == pytest.approx(np.clip(row[yaw[0]], yaw[1], yaw[2]), abs=1e-5)
    for _, goal in got.poses.get(next((o.topic for o in outputs if o.type == "goal_pose"), ""), []):
        path = paths_by_stamp.get(to_sec(goal.header.stamp))
        if path is not None:
            assert goal.pose == path[-1], "goal_pose is the last waypoint of the path"
