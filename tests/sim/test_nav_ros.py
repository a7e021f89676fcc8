"""The installed ``nav_sim_node`` with the policy node running ``policy:=expert_vln_nav`` over real DDS:
what vln_nav_sim.launch.py starts (qvla_ros.tools.bringup), one episode to the named object, a reset.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install mujoco")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32, Int32, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from qvla_core.sim.nav.generate import generate_scene  # noqa: E402
from qvla_core.sim.nav.planner import OccupancyGrid  # noqa: E402
from qvla_ros.io import conversions as conv  # noqa: E402
from qvla_ros.tools.bringup import nav_sim_demo_specs  # noqa: E402
from tests.ros.harness import INSTALL, InstalledNode, RosPeer, wait_for  # noqa: E402

CONFIG_DIR = INSTALL / "qvla_ros" / "share" / "qvla_ros" / "config" / "robots"
SEED = 102  # a short episode (about 3 m)


def test_bringup_specs() -> None:
    sim, policy = nav_sim_demo_specs({"policy": "expert_vln_nav", "seed": str(SEED)}, CONFIG_DIR)
    assert (sim.executable, policy.executable) == ("nav_sim_node", "policy_node")
    assert sim.parameters["seed"] == SEED and Path(sim.parameters["robot_config"]).name == "vln_nav.yaml"
    assert policy.parameters["use_sim_time"] is True
    assert policy.parameters["robot_config"] == sim.parameters["robot_config"]
    assert policy.parameters["initial_instruction"] == generate_scene(SEED).instruction
    given = nav_sim_demo_specs({"instruction": "go to the red box"}, CONFIG_DIR)[1]
    assert given.parameters["initial_instruction"] == "go to the red box"


class Watch:
    def __init__(self, peer: RosPeer) -> None:
        self.lock = threading.Lock()
        self.distance: list[float] = []
        self.collisions = 0
        self.speed = 1.0
        self.odom: Odometry | None = None
        self.image: Image | None = None
        self.scenes: list[dict[str, object]] = []
        self.instructions: list[str] = []
        n = peer.node
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(Float32, "/qvla_nav_sim/goal_distance", self._on_distance, 10)
        n.create_subscription(Int32, "/qvla_nav_sim/collisions", self._on_collisions, 10)
        n.create_subscription(Odometry, "/odom", self._on_odom, 10)
        n.create_subscription(Image, "/camera/color/image_raw", self._on_image, qos_profile_sensor_data)
        n.create_subscription(String, "/qvla_nav_sim/scene", self._on_scene, latched)
        n.create_subscription(String, "/qvla/instruction", self._on_instruction, 10)

    def _on_distance(self, m: Float32) -> None:
        with self.lock:
            self.distance.append(float(m.data))

    def _on_collisions(self, m: Int32) -> None:
        self.collisions = int(m.data)

    def _on_odom(self, m: Odometry) -> None:
        self.odom = m
        self.speed = math.hypot(m.twist.twist.linear.x, m.twist.twist.angular.z)

    def _on_image(self, m: Image) -> None:
        self.image = m

    def _on_scene(self, m: String) -> None:
        self.scenes.append(json.loads(m.data))

    def _on_instruction(self, m: String) -> None:
        self.instructions.append(m.data)

    def arrived(self) -> bool:
        with self.lock:
            recent = self.distance[-40:]
        return len(recent) == 40 and max(recent) <= 1.0 and self.speed < 0.02


def test_expert_drives_to_the_named_object_through_ros() -> None:
    specs = nav_sim_demo_specs(
        {"policy": "expert_vln_nav", "seed": str(SEED), "device": "cpu", "dtype": "float32"}, CONFIG_DIR
    )
    nodes = [InstalledNode.from_spec(s) for s in specs]
    peer = RosPeer("qvla_nav_test_peer")
    try:
        watch = Watch(peer)
        wait_for(lambda: watch.scenes, 60.0, "the nav sim's scene")
        assert watch.scenes[0]["seed"] == SEED
        assert watch.scenes[0]["instruction"] == generate_scene(SEED).instruction
        wait_for(watch.arrived, 90.0, "the base to stop within 1 m of the named object")
        assert watch.collisions == 0
        assert watch.distance[0] > 2.5  # it did travel
        img = watch.image
        assert img is not None and (img.width, img.height, img.encoding) == (640, 480, "rgb8")
        odom = watch.odom
        assert odom is not None and (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")

        # ~/reset: the next seed's scene and instruction, and the expert goes after that object.
        client = peer.node.create_client(Trigger, "/qvla_nav_sim/reset")
        assert client.wait_for_service(timeout_sec=10.0)
        reply = peer.call(client, Trigger.Request(), timeout=30.0)
        assert reply.success, reply.message
        nxt = generate_scene(SEED + 1)
        wait_for(lambda: len(watch.scenes) >= 2, 10.0, "the second scene")
        assert watch.scenes[-1]["seed"] == SEED + 1
        wait_for(lambda: nxt.instruction in watch.instructions, 10.0, "the new instruction")
        with watch.lock:
            watch.distance.clear()
        wait_for(lambda: watch.distance and watch.distance[0] > 1.0, 10.0, "the new goal distance")
        wait_for(watch.arrived, 120.0, "the base to reach the second object")
    finally:
        peer.close()
        logs = []
        for node in nodes:
            code = node.stop()
            log = node.log_path.read_text(errors="replace")
            logs.append((node, code, log))
            node.close()
    for node, code, log in logs:
        assert code == 0, f"{node} exited with {code}:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]


def _clear_ahead(seed: int, length: float) -> bool:
    scene = generate_scene(seed)
    x, y, yaw = scene.start
    end = (x + length * math.cos(yaw), y + length * math.sin(yaw))
    return OccupancyGrid.from_scene(scene, inflation=0.3).line_free((x, y), end)


def test_base_link_path_rep103_goal_pose_ignored_when_following_paths_and_pause() -> None:
    seed = next(s for s in range(200, 400) if _clear_ahead(s, 2.5))
    node = InstalledNode(
        "qvla_ros",
        "nav_sim_node",
        parameters={"seed": seed, "camera_rate_hz": 0.0, "follow": "path", "publish_instruction": False},
        name="qvla_nav_sim",
    )
    peer = RosPeer("qvla_nav_path_peer")
    try:
        watch = Watch(peer)
        clock: list[float] = []
        peer.node.create_subscription(Clock, "/clock", lambda m: clock.append(conv.to_sec(m.clock)), 10)
        goal_pub = peer.node.create_publisher(PoseStamped, "/goal_pose", 10)
        path_pub = peer.node.create_publisher(PathMsg, "/qvla/waypoints", 10)
        wait_for(lambda: watch.odom is not None and len(clock) > 5, 60.0, "odometry and the clock")
        wait_for(lambda: path_pub.get_subscription_count() > 0, 10.0, "the sim's path subscription")
        # A goal 2 m to the left: ignored (follow=path).
        goal_pub.publish(conv.waypoint_poses(np.array([[0.0, 2.0, 0.0]]), clock[-1], "base_link")[0])
        # 2 m straight ahead, then turned left 90 deg; stamped 0.5 s ago, when the base stood at the start.
        wp = np.array([[1.0, 0.0, 0.0], [2.0, 0.0, math.pi / 2]])
        path_pub.publish(conv.waypoint_path(wp, max(clock[-1] - 0.5, 0.01), "base_link"))
        wait_for(lambda: watch.speed > 0.1, 10.0, "the base to move")
        wait_for(lambda: watch.speed < 0.01, 30.0, "the base to stop")
        odom = watch.odom
        assert odom is not None
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        # The odom frame is the start pose, so the end is (2, 0) facing +y there (REP-103: yaw CCW).
        assert math.hypot(p.x - 2.0, p.y) < 0.2, (p.x, p.y)
        assert abs(2.0 * math.atan2(q.z, q.w) - math.pi / 2) < 0.2
        assert watch.collisions == 0
        # ~/pause stops the clock (and the base); resuming starts it again.
        pause = peer.node.create_client(SetBool, "/qvla_nav_sim/pause")
        assert pause.wait_for_service(timeout_sec=10.0)
        assert peer.call(pause, SetBool.Request(data=True)).success
        time.sleep(0.3)
        frozen = clock[-1]
        time.sleep(0.7)
        assert clock[-1] == frozen
        assert peer.call(pause, SetBool.Request(data=False)).success
        wait_for(lambda: clock[-1] > frozen + 0.2, 10.0, "the clock to run again")
    finally:
        peer.close()
        code = node.stop()
        log = node.log_path.read_text(errors="replace")
        node.close()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_the_launch_file_starts_what_bringup_says(monkeypatch: pytest.MonkeyPatch) -> None:
    """launch/vln_nav_sim.launch.py through the real launch API: bringup's arguments and nodes."""
    from tests.ros.ros2_commands import require_ros2_tools

    require_ros2_tools()
    from qvla_ros.tools.bringup import LAUNCH_ARGUMENTS, NAV_SIM_ARGUMENTS
    from tests.ros.test_launch import _expand

    values = {"policy": "expert_vln_nav", "device": "cpu", "seed": "7", "real_time_factor": "2"}
    declared, actions, built = _expand("vln_nav_sim.launch.py", values, monkeypatch)
    assert declared == [a.name for a in (*LAUNCH_ARGUMENTS, *NAV_SIM_ARGUMENTS)]
    specs = nav_sim_demo_specs(values, CONFIG_DIR)
    assert [(k["executable"], k["name"]) for k in built] == [(s.executable, s.name) for s in specs]
    assert [k["parameters"][0] for k in built] == [s.parameters for s in specs]
    assert len(actions) == 2
    assert built[0]["parameters"][0]["real_time_factor"] == 2.0
    assert built[1]["parameters"][0]["initial_instruction"] == generate_scene(7).instruction
