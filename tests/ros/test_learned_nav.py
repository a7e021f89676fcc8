"""The committed navigation checkpoint, through the installed nodes: a learned Qwen-VLA policy drives
the base towards the object the instruction names.

The checkpoint (share/qvla_ros/models/vln_nav_go_to, trained from scratch on expert drives in the
navigation sim, see its REGENERATE.md) is loaded by the installed policy node exactly as
``vln_nav_sim.launch.py`` starts it, with the robot YAML it was trained with, in a scene it has
never seen. The scene (seed 7,000,019) was picked by a rule before the policy ran there: the first
seed from 7,000,000 whose named object and one other are both in the camera's view from the start
(metrics.target_visibility), at least 2.5 m away (the yellow box at 4.7 m, the red sphere at 3.2 m).
Each instruction is run from the same start: within 12 sim seconds of the policy's first plan the
base must have come at least 1.5 m closer to the object named and end nearer to it than to the other
one. The same images with the other words drive elsewhere: what the policy does comes from the
instruction.
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

from qvla_core.sim.nav.controller import compose  # noqa: E402
from qvla_core.sim.nav.generate import generate_scene  # noqa: E402
from qvla_ros.io.conversions import to_sec  # noqa: E402
from qvla_ros.tools.bringup import nav_sim_demo_specs  # noqa: E402
from tests.ros.harness import INSTALL, InstalledNode, RosPeer, wait_for  # noqa: E402

CHECKPOINT = INSTALL / "qvla_ros/share/qvla_ros/models/vln_nav_go_to"
CONFIG_DIR = INSTALL / "qvla_ros/share/qvla_ros/config/robots"
SEED = 7_000_019
SECONDS = 12.0  # of sim time
CLOSER = 1.5  # [m]


class Track:
    """The base's world pose (the scene's start composed with /odom) and the sim clock."""

    def __init__(self, peer: RosPeer, start: tuple[float, float, float]) -> None:
        self.lock = threading.Lock()
        self.start = start
        self.poses: list[tuple[float, float, float, float]] = []  # (stamp, x, y, yaw)
        self.now = 0.0
        self.first_plan: float | None = None  # sim time of the policy's first non-empty path
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


@pytest.mark.parametrize("named", ["yellow box", "red sphere"])
def test_the_learned_policy_drives_towards_the_named_object(named: str) -> None:
    assert (CHECKPOINT / "policy_config.json").is_file(), f"{CHECKPOINT} missing: run scripts/setup.sh"
    scene = generate_scene(SEED)
    objects = {o.name: o for o in scene.objects}
    other = next(n for n in ("yellow box", "red sphere") if n != named)
    goal, decoy = objects[named], objects[other]
    values = {
        "robot_config": str(CHECKPOINT / "robot.yaml"),
        "policy": "qwen_vla",
        "checkpoint": str(CHECKPOINT),
        "device": "cpu",
        "dtype": "float32",
        "seed": str(SEED),
        "instruction": f"go to the {named}",
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
        policy_log = nodes[1].log()
    finally:
        peer.close()
        codes = [(n, n.stop()) for n in nodes]
    start_goal = math.hypot(goal.x - x0, goal.y - y0)
    end_goal = math.hypot(goal.x - x, goal.y - y)
    end_decoy = math.hypot(decoy.x - x, decoy.y - y)
    said = (
        f"'go to the {named}': {named} {start_goal:.2f} -> {end_goal:.2f} m, {other} ended {end_decoy:.2f} m "
        f"away, base at ({x:.2f}, {y:.2f})\n{policy_log[-2000:]}"
    )
    assert start_goal - end_goal >= CLOSER, said
    assert end_goal < end_decoy, said
    for node, code in codes:
        assert code == 0, f"{node} exited with {code}:\n{node.log()[-3000:]}"
