"""The navigation sim in the loop: a ROS 2 node that looks like a mobile base running Nav2's controller.

It owns a :class:`~qvla_core.sim.nav.env.NavSim` (MuJoCo base, seeded scene) and publishes what a
robot publishes: the forward camera (``sensor_msgs/Image`` on the robot YAML's camera topic),
``nav_msgs/Odometry`` on ``/odom`` (odom -> base_link; the odom frame is the episode's start pose),
the same transform on ``/tf`` when ``tf2_msgs`` is installed, and ``/clock`` (the sim owns time: run
the policy node with ``use_sim_time:=true``). It accepts what Nav2 accepts from the policy node's
outputs in the YAML: a ``goal_pose`` (``geometry_msgs/PoseStamped``) and a ``path`` (``nav_msgs/Path``),
stamped in ``base_link`` at the observation instant (placed with the pose the base had then) or in
``odom``. The local controller (:class:`~qvla_core.sim.nav.controller.PathFollower`, what Nav2's
controller server does on a robot) drives the base through them under its velocity and acceleration
limits. Which input it follows is the ``follow`` parameter: ``path`` (default; the policy publishes
both every plan), ``goal_pose`` (drives straight to it: the sim has no global planner), or ``latest``.

Episode topics: ``~/scene`` (std_msgs/String, JSON, latched: seed, instruction, episode, start pose;
what the privileged expert reads), ``~/collisions`` (Int32) and ``~/goal_distance`` (Float32) every
control step, and each episode's instruction on ``/qvla/instruction`` (``publish_instruction``).
Services: ``~/reset`` (std_srvs/Trigger: next seed, or the ``seed`` parameter if set since) and
``~/pause`` (std_srvs/SetBool: true stops time, false resumes).

Threading as in :mod:`qvla_ros.nodes.sim_node`: MuJoCo and EGL live in one sim thread; callbacks only
queue items for it.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from rclpy.task import Future
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Int32, String
from std_srvs.srv import SetBool, Trigger

from qvla_core.errors import ConfigError
from qvla_core.robot_io import PoseOutput, load_robot_config
from qvla_core.sim.nav.controller import PathFollower, compose
from qvla_core.sim.nav.env import CONTROL_DT
from qvla_ros.io import conversions as conv
from qvla_ros.io.parameters import Param, check_update, declare_all
from qvla_ros.nodes.shutdown import run_sim_node

try:  # not on PyPI (see README): /tf is published only where a ROS 2 distribution provides it
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None

STEP_NS = round(CONTROL_DT * 1e9)
SCENE_TOPIC = "/qvla_nav_sim/scene"
RESET_TIMEOUT_S = 30.0

_RO = {"read_only": True}
NAV_SIM_PARAMS: tuple[Param, ...] = (
    Param("robot_config", "", "Robot YAML; empty = the installed vln_nav.yaml.", **_RO),
    Param(
        "seed", 0, "First scene's seed; each ~/reset takes the next (or this, set).", low=0, high=2**31 - 1
    ),
    Param("image_width", 0, "Rendered image width [px]; 0 = the YAML camera's.", low=0, high=4096, **_RO),
    Param("image_height", 0, "Rendered image height [px]; 0 = the YAML camera's.", low=0, high=4096, **_RO),
    Param("camera_rate_hz", 10.0, "Camera rate in sim time [Hz]; 0 = no camera.", low=0.0, high=20.0, **_RO),
    Param("real_time_factor", 1.0, "Sim seconds per wall second (0 = flat out).", low=0.0, high=100.0),
    Param("publish_clock", True, "Publish /clock (others: use_sim_time:=true).", **_RO),
    Param("follow", "path", "What drives the base.", choices=("path", "goal_pose", "latest"), **_RO),
    Param("publish_instruction", True, "Publish each episode's instruction on /qvla/instruction.", **_RO),
)


@dataclass
class _Command:
    kind: str  # "path" or "goal_pose"
    frame: str
    stamp: float
    poses: np.ndarray  # (N, 3)


@dataclass
class _Reset:
    done: threading.Event = field(default_factory=threading.Event)
    message: str = ""


class NavSimNode(Node):
    def __init__(self, stop: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__("qvla_nav_sim", **kwargs)
        p, faults = declare_all(self, NAV_SIM_PARAMS)
        if faults:
            raise ConfigError("; ".join(faults))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.seed = int(p["seed"])
        self.real_time_factor = float(p["real_time_factor"])
        self.follow = str(p["follow"])
        self.paused = False
        config_path = p["robot_config"] or str(_installed_yaml())
        config = load_robot_config(config_path)
        cams = config.embodiment.cameras
        if len(config.ros.cameras) != 1 or len(cams) != 1:
            raise ConfigError(f"{config_path}: the navigation sim has one camera; the YAML has {len(cams)}")
        if config.ros.cameras[0].compressed:
            raise ConfigError(f"{config_path}: camera topic is compressed; the sim publishes raw Image only")
        self.width = int(p["image_width"]) or cams[0].width
        self.height = int(p["image_height"]) or cams[0].height
        rate = float(p["camera_rate_hz"])
        self.camera_every = 0 if rate <= 0 else max(1, round(1.0 / (rate * CONTROL_DT)))
        self.config_path = config_path

        self._queue: queue.SimpleQueue[_Command | _Reset | int] = queue.SimpleQueue()
        self._stop = stop or threading.Event()
        self._ready = threading.Event()
        self._startup_error: str | None = None
        self.finished: Future[str | None] = Future()
        self._thread = threading.Thread(target=self._run, name="qvla_nav_sim_loop", daemon=True)

        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._clock_pub = self.create_publisher(Clock, "/clock", 10) if p["publish_clock"] else None
        self._image_pub = self.create_publisher(Image, config.ros.cameras[0].topic, 5)
        self._camera_frame = cams[0].name
        self._odom_pub = self.create_publisher(Odometry, "/odom", 10)
        self._tf_pub = self.create_publisher(TFMessage, "/tf", 10) if TFMessage is not None else None
        self._scene_pub = self.create_publisher(String, SCENE_TOPIC, latched)
        self._instruction_pub = (
            self.create_publisher(String, "/qvla/instruction", 10) if p["publish_instruction"] else None
        )
        self._collisions_pub = self.create_publisher(Int32, "~/collisions", 10)
        self._distance_pub = self.create_publisher(Float32, "~/goal_distance", 10)
        for out in config.ros.outputs:
            if isinstance(out, PoseOutput) and out.type == "goal_pose":
                self.create_subscription(PoseStamped, out.topic, self._on_goal, 10)
            elif isinstance(out, PoseOutput) and out.type == "path":
                self.create_subscription(PathMsg, out.topic, self._on_path, 10)
            else:
                self.get_logger().warning(f"output {out.topic} ({out.type}) is not simulated; ignored")
        self.create_service(Trigger, "~/reset", self._srv_reset)
        self.create_service(SetBool, "~/pause", self._srv_pause)

    # ---------------------------------------------------------------- ROS callbacks (enqueue only)
    def _on_set_parameters(self, params: list[Any]) -> Any:
        result = check_update(params, NAV_SIM_PARAMS)
        if result.successful:
            for q in params:
                if q.name == "real_time_factor":
                    self.real_time_factor = float(q.value)
                elif q.name == "seed":
                    self._queue.put(int(q.value))
        return result

    def _poses(self, kind: str, frame: str, stamp: Any, poses: list[Any]) -> None:
        if frame not in ("base_link", "odom"):
            self.get_logger().warning(f"{kind} in frame {frame!r} ignored: the sim takes base_link or odom")
            return
        arr = np.array(
            [(q.position.x, q.position.y, 2.0 * math.atan2(q.orientation.z, q.orientation.w)) for q in poses],
            dtype=np.float64,
        ).reshape(-1, 3)
        if not np.all(np.isfinite(arr)):
            self.get_logger().warning(f"{kind} with non-finite poses ignored")
            return
        self._queue.put(_Command(kind, frame, conv.to_sec(stamp), arr))

    def _on_goal(self, msg: PoseStamped) -> None:
        self._poses("goal_pose", msg.header.frame_id, msg.header.stamp, [msg.pose])

    def _on_path(self, msg: PathMsg) -> None:
        self._poses("path", msg.header.frame_id, msg.header.stamp, [ps.pose for ps in msg.poses])

    def _srv_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        item = _Reset()
        self._queue.put(item)
        deadline = time.monotonic() + RESET_TIMEOUT_S
        while not item.done.wait(0.05):
            if self._stop.is_set() or self.finished.done() or time.monotonic() > deadline:
                response.success, response.message = False, "the sim loop did not take the reset"
                return response
        response.success, response.message = True, item.message
        return response

    def _srv_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.paused = bool(request.data)
        response.success, response.message = True, "paused" if self.paused else "running"
        return response

    # ---------------------------------------------------------------- lifecycle (main thread)
    def start(self) -> None:
        self._thread.start()
        while not self._ready.wait(0.1) and not self._stop.is_set():
            pass
        if self._startup_error is not None:
            raise ConfigError(self._startup_error)

    def close(self, timeout_s: float = 10.0) -> bool:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    # ---------------------------------------------------------------- the sim thread
    def _run(self) -> None:
        try:
            from qvla_core.sim.nav.env import NavSim

            sim = NavSim(self.width, self.height)
        except Exception as exc:
            self._startup_error = f"cannot create the navigation sim ({type(exc).__name__}): {exc}"
            self._ready.set()
            self.finished.set_result(self._startup_error)
            return
        error: str | None = None
        try:
            self._loop(sim)
        except Exception as exc:
            if not self._stop.is_set() and self.context.ok():
                error = f"sim loop failed ({type(exc).__name__}): {exc}"
                self.get_logger().error(error)
        finally:
            sim.close()
            self.finished.set_result(error)

    def _loop(self, sim: Any) -> None:
        episode, seed, next_seed = 0, self.seed, None
        t_ns = 0  # never goes back, not even on reset
        follower = self._start_episode(sim, seed, episode, t_ns)
        self._ready.set()
        self.get_logger().info(
            f"nav sim ready: seed {seed}, robot {self.config_path}, camera {self.width}x{self.height}, "
            f"follows {self.follow}, real_time_factor {self.real_time_factor:g}"
        )
        wall0, sim0 = time.monotonic(), 0.0
        step = 0
        while not self._stop.is_set() and self.context.ok():
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, int):
                    next_seed = item
                elif isinstance(item, _Reset):
                    episode, seed = episode + 1, seed + 1 if next_seed is None else next_seed
                    next_seed = None
                    follower = self._start_episode(sim, seed, episode, t_ns)
                    item.message = f"episode {episode} (seed {seed}): {sim.scene.instruction}"
                    self.get_logger().info(item.message)
                    item.done.set()
                else:
                    self._command(sim, follower, item, t_ns / 1e9)
            if self.paused:
                self._stop.wait(0.05)
                wall0, sim0 = time.monotonic(), t_ns / 1e9
                continue
            # The sim clock starts at the episode's reset: its own time restarts there.
            v, w = follower.command(sim.pose(), CONTROL_DT)
            sim.step(v, w)
            t_ns += STEP_NS
            step += 1
            self._publish(sim, t_ns, render=self.camera_every > 0 and (step - 1) % self.camera_every == 0)
            factor = self.real_time_factor
            if factor > 0:
                due = wall0 + (t_ns / 1e9 - sim0) / factor
                lag = due - time.monotonic()
                if lag > 0:
                    self._stop.wait(lag)
                elif lag < -0.25:  # behind: do not catch up in a burst
                    wall0, sim0 = time.monotonic(), t_ns / 1e9

    def _start_episode(self, sim: Any, seed: int, episode: int, t_ns: int) -> PathFollower:
        scene = sim.reset(seed)
        self._episode_start_ns = t_ns
        info = {
            "seed": seed,
            "episode": episode,
            "instruction": scene.instruction,
            "start": list(scene.start),
            "stamp": t_ns / 1e9,
        }
        self._scene_pub.publish(String(data=json.dumps(info)))
        if self._instruction_pub is not None:
            self._instruction_pub.publish(String(data=scene.instruction))
        return PathFollower(sim.limits)

    def _sim_time(self, t_ns: int) -> float:
        """NavSim's own clock (restarts at 0 every episode) for a stamp on the published clock."""
        return t_ns / 1e9 - self._episode_start_ns / 1e9

    def _command(self, sim: Any, follower: PathFollower, item: _Command, now: float) -> None:
        if self.follow not in ("latest", item.kind):
            return
        if len(item.poses) == 0:  # an empty Path: stop, as Nav2's controller does
            follower.stop()
            return
        if item.frame == "odom":
            world = compose(sim.scene.start, item.poses)
            start = sim.pose()
        else:
            # Waypoints in base_link at the observation instant: placed with the pose at that stamp.
            at = self._sim_time(round(item.stamp * 1e9)) if item.stamp > 0 else sim.time
            start = sim.pose_at(at)
            world = compose(start, item.poses)
        if item.kind == "goal_pose":
            follower.set_goal(tuple(world[-1]), sim.pose())
        else:
            follower.set_path(world, start=start)

    def _publish(self, sim: Any, t_ns: int, render: bool) -> None:
        stamp = conv.time_from_ns(t_ns)
        if self._clock_pub is not None:
            self._clock_pub.publish(conv.clock_msg(t_ns))
        x, y, yaw = sim.odom_pose()
        vx, vy, wz = sim.twist()
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id, odom.child_frame_id = stamp, "odom", "base_link"
        odom.pose.pose.position.x, odom.pose.pose.position.y = x, y
        odom.pose.pose.orientation = conv.yaw_quaternion(yaw)
        odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.angular.z = vx, vy, wz
        self._odom_pub.publish(odom)
        if self._tf_pub is not None:
            tf = TransformStamped()
            tf.header.stamp, tf.header.frame_id, tf.child_frame_id = stamp, "odom", "base_link"
            tf.transform.translation.x, tf.transform.translation.y = x, y
            tf.transform.rotation = conv.yaw_quaternion(yaw)
            self._tf_pub.publish(TFMessage(transforms=[tf]))
        self._collisions_pub.publish(Int32(data=int(sim.collisions)))
        goal = sim.scene.target_object
        wx, wy, _ = sim.pose()
        self._distance_pub.publish(Float32(data=float(math.hypot(goal.x - wx, goal.y - wy))))
        if render:
            msg = conv.rgb_to_image(sim.render(), t_ns / 1e9, self._camera_frame)
            msg.header.stamp = stamp
            self._image_pub.publish(msg)


def _installed_yaml() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots" / "vln_nav.yaml"


def main(args: list[str] | None = None) -> None:
    run_sim_node(lambda stop: NavSimNode(stop=stop), "qvla_nav_sim", args)


if __name__ == "__main__":
    main()
