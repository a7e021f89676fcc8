"""The committed navigation checkpoint, through the installed nodes: it loads, plans and drives the
base, within the robot YAML's limits.

The checkpoint (share/qvla_ros/models/vln_nav_go_to, trained from scratch on expert drives in the
navigation sim, see its REGENERATE.md) is loaded by the installed policy node exactly as
``vln_nav_sim.launch.py`` starts it, with the robot YAML it was trained with, in a scene it has
never seen (seed 7,000,304: the green box in view 3.5 m ahead, a clear drive, nothing else visible).
Within 12 sim seconds of its first plan every path it sends must be finite and inside the YAML's
waypoint limits, the base must have moved, and both nodes must exit cleanly.

What this does not test, and why: the issue asks for a test that the checkpoint drives towards the
named object. It does not do so reliably. Directly on the sim (seeded, the sim paused while it
infers) it came at least 1 m closer on this scene (2.3 m) and on 5 of the first 6 scenes of this
kind; through ROS 2 three runs of this test measured -0.6, +0.3 and >= 1 m: timing changes which
frames it sees and its plans are not stable enough for that to wash out. A test of it would be
flaky; docs/bench/nav_learned.md has what it does on the benchmark.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install mujoco")

from nav_msgs.msg import Odometry  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from qvla_core.robot_io import load_robot_config  # noqa: E402
from qvla_core.sim.nav.controller import compose, wrap  # noqa: E402
from qvla_core.sim.nav.generate import generate_scene  # noqa: E402
from qvla_ros.io.conversions import to_sec  # noqa: E402
from qvla_ros.tools.bringup import nav_sim_demo_specs  # noqa: E402
from tests.ros.harness import INSTALL, InstalledNode, RosPeer, wait_for  # noqa: E402

CHECKPOINT = INSTALL / "qvla_ros/share/qvla_ros/models/vln_nav_go_to"
CONFIG_DIR = INSTALL / "qvla_ros/share/qvla_ros/config/robots"
SEED = 7_000_304
SECONDS = 12.0  # of sim time
MOVED = 0.3  # [m]


class Track:
    """The base's world pose (the scene's start composed with /odom) and the sim clock."""

    def __init__(self, peer: RosPeer, start: tuple[float, float, float]) -> None:
        self.lock = threading.Lock()
        self.start = start
        self.poses: list[tuple[float, float, float, float]] = []  # (stamp, x, y, yaw)
        self.now = 0.0
        self.first_plan: float | None = None  # sim time of the policy's first non-empty path
        self.paths: list[list[tuple[float, float, float]]] = []  # (x, y, yaw) in base_link
        peer.node.create_subscription(Odometry, "/odom", self._on_odom, 50)
        peer.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        peer.node.create_subscription(PathMsg, "/qvla/waypoints", self._on_path, 10)

    def _on_odom(self, m: Odometry) -> None:
        q = m.pose.pose.orientation
        local = (m.pose.pose.position.x, m.pose.pose.position.y, 2.0 * math.atan2(q.z, q.w))
        x, y, yaw = compose(self.start, [local])[0]
        with self.lock:
            self.poses.append((to_sec(m.header.stamp), float(x), float(y), float(yaw)))

    def _on_clock(self, m: Clock) -> None:
        self.now = to_sec(m.clock)

    def _on_path(self, m: PathMsg) -> None:
        if m.poses and self.first_plan is None:
            self.first_plan = self.now
        path = []
        for p in m.poses:
            q = p.pose.orientation
            path.append((p.pose.position.x, p.pose.position.y, wrap(2.0 * math.atan2(q.z, q.w))))
        with self.lock:
            self.paths.append(path)


def test_the_committed_checkpoint_plans_and_drives_within_limits() -> None:
    assert (CHECKPOINT / "policy_config.json").is_file(), f"{CHECKPOINT} missing: run scripts/setup.sh"
    scene = generate_scene(SEED)
    values = {
        "robot_config": str(CHECKPOINT / "robot.yaml"),
        "policy": "qwen_vla",
        "checkpoint": str(CHECKPOINT),
        "device": "cpu",
        "dtype": "float32",
        "seed": str(SEED),
        "instruction": scene.instruction,
    }
    nodes = [InstalledNode.from_spec(s) for s in nav_sim_demo_specs(values, CONFIG_DIR)]
    peer = RosPeer("qvla_learned_nav_test")
    try:
        track = Track(peer, scene.start)
        # From the policy's first plan on (loading the checkpoint takes a few wall seconds).
        wait_for(lambda: track.first_plan is not None, 90.0, "the policy's first path on /qvla/waypoints")
        t0 = float(track.first_plan or 0.0)
        deadline = time.monotonic() + 120.0
        while track.now < t0 + SECONDS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert track.now >= t0 + SECONDS, f"sim time stalled at {track.now:.1f} s"
        with track.lock:
            x, y = track.poses[-1][1:3]
            x0, y0 = track.poses[0][1:3]
            paths = [p for p in track.paths if p]
        policy_log = nodes[1].log()
    finally:
        peer.close()
        codes = [(n, n.stop()) for n in nodes]
    emb = load_robot_config(CHECKPOINT / "robot.yaml").embodiment
    lower = [c.lower for c in emb.action]
    upper = [c.upper for c in emb.action]
    said = (
        f"'{scene.instruction}': base from ({x0:.2f}, {y0:.2f}) to ({x:.2f}, {y:.2f})\n{policy_log[-2000:]}"
    )
    assert len(paths) >= SECONDS - 2, f"{len(paths)} plans in {SECONDS} s at 1 Hz\n{said}"
    for path in paths:
        assert len(path) == emb.horizon, said
        for pose in path:
            assert all(math.isfinite(v) for v in pose), said
            assert all(lo - 1e-4 <= v <= hi + 1e-4 for v, lo, hi in zip(pose, lower, upper, strict=True)), (
                f"waypoint {pose} outside {lower}..{upper}\n{said}"
            )
    assert math.hypot(x - x0, y - y0) >= MOVED, said
    for node, code in codes:
        assert code == 0, f"{node} exited with {code}:\n{node.log()[-3000:]}"
