"""The privileged navigation expert's view of the nav sim over ROS: the scene and the true pose.

:class:`RosNavGroundTruth` implements :class:`qvla_core.sim.nav.expert.GroundTruth` inside the policy
node's process. It listens to the nav sim's latched scene message (``/qvla_nav_sim/scene``: the seed,
from which the scene is regenerated exactly, and the episode's start pose) and to ``/odom`` (the odom
frame is the episode's start pose, so world = start composed with odom), on a node and executor of
its own in a background thread, so that the policy node's executor never waits for it.

This is what makes the expert privileged: a learned policy gets only the camera and the words.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections import deque

import rclpy
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import String

from qvla_core.errors import ObservationError
from qvla_core.policy import Policy
from qvla_core.robot_io import RobotConfig
from qvla_core.sim.nav.controller import Pose2D, compose, wrap
from qvla_core.sim.nav.generate import generate_scene
from qvla_core.sim.nav.scene import NavScene
from qvla_ros.io.conversions import to_sec
from qvla_ros.nodes.nav_sim_node import SCENE_TOPIC

SCENE_WAIT_S = 1.0
HISTORY = 400  # odometry messages kept (20 s at the sim's 20 Hz)


class RosNavGroundTruth:
    """Scene and world pose at a stamp, from the nav sim's topics (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scene: NavScene | None = None
        self._episode_stamp = 0.0
        self._odom: deque[tuple[float, float, float, float]] = deque(maxlen=HISTORY)
        self._got_scene = threading.Event()
        # Not the process's --ros-args: their "-r __node:=qvla_policy" would give this node the policy
        # node's name (two nodes of one name in the graph).
        self._node = rclpy.create_node("qvla_nav_ground_truth", use_global_arguments=False)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._node.create_subscription(String, SCENE_TOPIC, self._on_scene, latched)
        self._node.create_subscription(Odometry, "/odom", self._on_odom, 50)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self._node)
        self._thread = threading.Thread(target=self._spin, name="qvla_nav_ground_truth", daemon=True)
        self._thread.start()
        # Nothing else closes a policy's helpers: at the context's shutdown this node goes, else its
        # handle keeps the context (and Fast DDS's shared-memory segment) alive past the exit.
        self._node.context.on_shutdown(self.close)

    def _spin(self) -> None:
        try:
            while rclpy.ok():
                self._executor.spin_once(timeout_sec=0.1)
        except Exception:  # the context went away at shutdown
            pass

    def _on_scene(self, msg: String) -> None:
        info = json.loads(msg.data)
        scene = generate_scene(int(info["seed"]))
        with self._lock:
            self._scene = scene
            self._episode_stamp = float(info["stamp"])
            self._odom.clear()
        self._got_scene.set()

    def _on_odom(self, msg: Odometry) -> None:
        q = msg.pose.pose.orientation
        yaw = 2.0 * math.atan2(q.z, q.w)
        with self._lock:
            t = to_sec(msg.header.stamp)
            if t >= self._episode_stamp:
                self._odom.append((t, msg.pose.pose.position.x, msg.pose.pose.position.y, yaw))

    @property
    def scene(self) -> NavScene:
        if not self._got_scene.wait(SCENE_WAIT_S):
            raise ObservationError(
                f"no scene from the nav sim on {SCENE_TOPIC} yet (is nav_sim_node running?)"
            )
        with self._lock:
            assert self._scene is not None
            return self._scene

    def pose_at(self, stamp: float) -> Pose2D:
        """World pose at ``stamp`` (sim time): the odometry nearest in time, composed with the start."""
        scene = self.scene
        with self._lock:
            odom = list(self._odom)
        if not odom:
            return scene.start  # nothing has moved yet this episode
        times = [o[0] for o in odom]
        k = min(max(bisect.bisect_left(times, stamp), 1), len(odom) - 1) if len(odom) > 1 else 0
        if len(odom) > 1 and times[k - 1] <= stamp <= times[k] and times[k] > times[k - 1]:
            (t0, x0, y0, a0), (t1, x1, y1, a1) = odom[k - 1], odom[k]
            s = (stamp - t0) / (t1 - t0)
            local = (x0 + s * (x1 - x0), y0 + s * (y1 - y0), wrap(a0 + s * wrap(a1 - a0)))
        else:
            nearest = min(odom, key=lambda o: abs(o[0] - stamp))
            local = nearest[1:]
        p = compose(scene.start, [local])[0]
        return (float(p[0]), float(p[1]), float(p[2]))

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=1.0)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._node.destroy_node()


def make_nav_expert(config: RobotConfig) -> Policy:
    """The privileged navigation expert (``policy:=expert_vln_nav``) on the nav sim's ground truth."""
    from qvla_core.sim.nav.expert import NavExpert

    return NavExpert(config.embodiment, ground_truth=RosNavGroundTruth())


def make_chance_baseline(config: RobotConfig) -> Policy:
    """The chance baseline (walks to a random object of the scene), for ``policy:=module:factory``:
    ``policy:=qvla_ros.nodes.nav_ground_truth:make_chance_baseline``."""
    from qvla_core.sim.nav.expert import RandomObjectBaseline

    return RandomObjectBaseline(config.embodiment, ground_truth=RosNavGroundTruth())


def make_searching_expert(config: RobotConfig) -> Policy:
    """The searching expert (looks for the named object before it drives to it; knows the map, not
    where the object is), for ``policy:=qvla_ros.nodes.nav_ground_truth:make_searching_expert``."""
    from qvla_core.sim.nav.search import SearchingExpert

    return SearchingExpert(config.embodiment, ground_truth=RosNavGroundTruth())
