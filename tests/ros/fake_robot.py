"""A robot over real DDS for integration tests: cameras + joint states out, controller topics in.

Publishes what the robot YAML says a robot publishes (camera topics, raw Image or, for a topic
ending in /compressed, a JPEG CompressedImage; one JointState per source with the hardware joint
names) and records what a robot would receive: JointTrajectory on each controller topic,
PoseStamped / nav_msgs/Path on each goal_pose / path output, chunks and status.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from trajectory_msgs.msg import JointTrajectory

from qvla_core.robot_io import PoseOutput, RobotConfig, TrajectoryOutput
from qvla_core.sim.trajectory_executor import TrajectoryExecutor
from qvla_msgs.msg import ActionChunk, PolicyStatus
from tests.ros.harness import RosPeer


def stamp_of(seconds: float) -> Any:
    from builtin_interfaces.msg import Time

    sec = int(seconds)
    return Time(sec=sec, nanosec=int((seconds - sec) * 1e9))


def to_sec(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


@dataclass
class Received:
    """Everything the robot side received, with arrival times (wall clock)."""

    trajectories: dict[str, list[tuple[float, JointTrajectory]]] = field(default_factory=dict)
    chunks: list[tuple[float, ActionChunk]] = field(default_factory=list)
    statuses: list[PolicyStatus] = field(default_factory=list)
    poses: dict[str, list[tuple[float, PoseStamped]]] = field(default_factory=dict)  # goal_pose outputs
    paths: dict[str, list[tuple[float, Path]]] = field(default_factory=dict)  # path outputs

    def all_trajectories(self) -> list[tuple[float, str, JointTrajectory]]:
        return sorted((t, topic, m) for topic, items in self.trajectories.items() for t, m in items)


class FakeRobot:
    """Streams sensor data in a thread; knobs let a test corrupt one input at a time."""

    def __init__(
        self,
        peer: RosPeer,
        config: RobotConfig,
        camera_hz: float = 15.0,
        state_hz: float = 50.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.peer, self.config = peer, config
        self.clock = clock  # what stamps and the controllers' time are on (sim time in some tests)
        node = peer.node
        emb = config.embodiment
        self.received = Received()
        self._lock = threading.Lock()
        self.camera_hz, self.state_hz = camera_hz, state_hz
        self.streaming = True  # False: nothing is published until publish_once()
        self.paused_inputs: set[str] = set()  # topics/cameras that stop publishing
        self.image_override: dict[str, Any] = {}  # camera -> a bad Image/CompressedImage template
        self.state_override: dict[str, tuple[list[str], list[float]]] = {}  # topic -> (names, positions)
        self.stamp_offset: dict[str, float] = {}  # input -> seconds added to its stamps
        self.ignore_commands_until = 0.0  # wall time before which trajectories are not executed
        # What was sent, newest last: camera -> stamps [s]; joint-state topic -> (stamp, positions).
        self.sent_images: dict[str, deque[float]] = {c.camera: deque(maxlen=1000) for c in config.ros.cameras}
        self.sent_states: dict[str, deque[tuple[float, list[float]]]] = {
            src.topic: deque(maxlen=1000) for src in config.ros.joint_states
        }
        # Each controller tracks what it receives perfectly (JTC rules); joint states report it.
        # It starts at zero, moved into the joint limits (a real arm is never outside them).
        self.controllers: dict[str, TrajectoryExecutor] = {}
        self.rejections: list[str] = []
        where: dict[str, tuple[str, int]] = {}
        for out in config.ros.outputs:
            if isinstance(out, TrajectoryOutput):
                self.controllers[out.topic] = TrajectoryExecutor(
                    out.joint_names, [self._start_position(ch) for ch in out.channels]
                )
                where.update({ch: (out.topic, j) for j, ch in enumerate(out.channels)})
        self._traj_subs: dict[str, Any] = {}
        self._state_source = {
            src.topic: [where.get(ch) for ch in src.channels] for src in config.ros.joint_states
        }
        cams = {c.name: c for c in emb.cameras}
        self._camera_pubs = {}
        self._frames: dict[str, Image | CompressedImage] = {}
        rng = np.random.default_rng(0)
        for cam in config.ros.cameras:
            spec = cams[cam.camera]
            self._camera_pubs[cam.camera] = node.create_publisher(
                CompressedImage if cam.compressed else Image, cam.topic, qos_profile_sensor_data
            )
            rgb = rng.integers(0, 255, (spec.height, spec.width, 3), dtype=np.uint8)
            if cam.compressed:
                self._frames[cam.camera] = compressed_frame(rgb, "jpeg", cam.camera)
            else:
                frame = Image(height=spec.height, width=spec.width, encoding="rgb8", step=spec.width * 3)
                frame.data = rgb.tobytes()
                frame.header.frame_id = cam.camera
                self._frames[cam.camera] = frame
        self._state_pubs = {
            src.topic: node.create_publisher(JointState, src.topic, 10) for src in config.ros.joint_states
        }
        self._names = {src.topic: list(src.joint_names) for src in config.ros.joint_states}
        for out in config.ros.outputs:
            if isinstance(out, TrajectoryOutput):
                self.received.trajectories[out.topic] = []
                self.subscribe_controller(out.topic)
            elif isinstance(out, PoseOutput) and out.type in ("goal_pose", "path"):
                store = self.received.poses if out.type == "goal_pose" else self.received.paths
                store[out.topic] = []
                node.create_subscription(
                    PoseStamped if out.type == "goal_pose" else Path,
                    out.topic,
                    lambda m, s=store, t=out.topic: self._on_pose(s, t, m),
                    10,
                )
        node.create_subscription(ActionChunk, "/qvla/action_chunk", self._on_chunk, 10)
        node.create_subscription(PolicyStatus, "/qvla/status", self._on_status, 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._stream, daemon=True)
        self._thread.start()

    def _start_position(self, channel: str) -> float:
        """Hardware position of one controller joint at start-up: 0 clamped into its limits."""
        raw = self.config.ros.gripper_raw_range.get(channel)
        if raw is not None:
            return float(np.clip(0.0, min(raw), max(raw)))
        spec = next(c for c in self.config.embodiment.action if c.name == channel)
        return float(np.clip(0.0, spec.lower, spec.upper))

    # ------------------------------------------------------------- recording
    def _on_traj(self, topic: str, msg: JointTrajectory) -> None:
        now = time.time()
        with self._lock:
            self.received.trajectories[topic].append((now, msg))
            if now < self.ignore_commands_until:
                return  # the controllers are restarting (a sim reset): recorded, not executed
            ok = self.controllers[topic].accept(
                to_sec(msg.header.stamp),
                list(msg.joint_names),
                [to_sec(p.time_from_start) for p in msg.points],
                np.array([list(p.positions) for p in msg.points]),
                self.clock(),
            )
            if not ok:
                self.rejections.append(f"{topic}: {self.controllers[topic].last_rejection}")

    def _on_pose(self, store: dict[str, list[tuple[float, Any]]], topic: str, msg: Any) -> None:
        with self._lock:
            store[topic].append((time.time(), msg))

    def _on_chunk(self, msg: ActionChunk) -> None:
        with self._lock:
            self.received.chunks.append((time.time(), msg))

    def _on_status(self, msg: PolicyStatus) -> None:
        with self._lock:
            self.received.statuses.append(msg)

    def snapshot(self) -> Received:
        with self._lock:
            return Received(
                {k: list(v) for k, v in self.received.trajectories.items()},
                list(self.received.chunks),
                list(self.received.statuses),
                {k: list(v) for k, v in self.received.poses.items()},
                {k: list(v) for k, v in self.received.paths.items()},
            )

    def clear(self) -> None:
        with self._lock:
            for v in self.received.trajectories.values():
                v.clear()
            for store in (self.received.poses, self.received.paths):
                for items in store.values():
                    items.clear()
            self.received.chunks.clear()
            self.received.statuses.clear()

    def last_status(self) -> PolicyStatus | None:
        with self._lock:
            return self.received.statuses[-1] if self.received.statuses else None

    # ------------------------------------------------------------- streaming
    def publish_once(self, now: float) -> None:
        """One complete observation, every input stamped ``now`` (for streaming=False)."""
        self._publish_states(now)
        self._publish_cameras(now)

    def _stream(self) -> None:
        next_cam = next_state = time.time()
        while not self._stop.is_set():
            if not self.streaming:
                time.sleep(0.005)
                next_cam = next_state = time.time()
                continue
            now = time.time()
            if now >= next_state:
                self._publish_states(self.clock())
                next_state += 1.0 / self.state_hz
            if now >= next_cam:
                self._publish_cameras(self.clock())
                next_cam += 1.0 / self.camera_hz
            time.sleep(max(0.0, min(next_cam, next_state) - time.time()))

    def _publish_states(self, now: float) -> None:
        for topic, pub in self._state_pubs.items():
            if topic in self.paused_inputs:
                continue
            names, positions = self.state_override.get(topic, (self._names[topic], self.measured(topic, now)))
            msg = JointState(name=list(names), position=[float(p) for p in positions])
            msg.header.stamp = stamp_of(now + self.stamp_offset.get(topic, 0.0))
            pub.publish(msg)
            self.sent_states[topic].append((to_sec(msg.header.stamp), list(msg.position)))

    def measured(self, topic: str, now: float) -> list[float]:
        """Joint positions of one JointState source: the controllers' current commands."""
        out = []
        with self._lock:
            for source in self._state_source[topic]:
                if source is None:
                    out.append(0.0)
                else:
                    controller, index = source
                    out.append(float(self.controllers[controller].target(now)[index]))
        return out

    def _publish_cameras(self, now: float) -> None:
        with self._lock:
            pubs = list(self._camera_pubs.items())  # a camera driver may be restarting
        for cam, pub in pubs:
            if cam in self.paused_inputs:
                continue
            msg = self.image_override.get(cam, self._frames[cam])
            msg.header.stamp = stamp_of(now + self.stamp_offset.get(cam, 0.0))
            pub.publish(msg)
            self.sent_images[cam].append(to_sec(msg.header.stamp))

    def subscribe_controller(self, topic: str) -> None:
        """The controller on ``topic`` listens (again)."""
        self._traj_subs[topic] = self.peer.node.create_subscription(
            JointTrajectory, topic, lambda m, t=topic: self._on_traj(t, m), 10
        )

    def unsubscribe_controller(self, topic: str) -> None:
        """The controller on ``topic`` is unloaded: nothing subscribes to its command topic."""
        self.peer.node.destroy_subscription(self._traj_subs.pop(topic))

    def kill_camera(self, camera: str) -> float:
        """The camera driver dies: its publisher is destroyed. Returns the stamp of its last frame."""
        with self._lock:
            pub = self._camera_pubs.pop(camera)
        time.sleep(0.05)  # a publish of the streaming thread in progress finishes
        self.peer.node.destroy_publisher(pub)
        return self.sent_images[camera][-1]

    def restart_camera(self, camera: str) -> None:
        """The driver comes back: a new publisher on the same topic."""
        cam = next(c for c in self.config.ros.cameras if c.camera == camera)
        pub = self.peer.node.create_publisher(
            CompressedImage if cam.compressed else Image, cam.topic, qos_profile_sensor_data
        )
        with self._lock:
            self._camera_pubs[camera] = pub

    def teleport(self, positions: dict[str, list[float]], restart_s: float = 0.0) -> None:
        """Controllers (by topic) jump to new positions with no trajectory, as after a sim reset;
        for ``restart_s`` after it they execute nothing (controllers restarting with the sim)."""
        with self._lock:
            self.ignore_commands_until = time.time() + restart_s
            for topic, q in positions.items():
                old = self.controllers[topic]
                self.controllers[topic] = TrajectoryExecutor(old.joint_names, q)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def compressed_frame(rgb: np.ndarray, fmt: str, frame_id: str = "") -> CompressedImage:
    """An RGB image as image_transport's compressed plugin sends it (format "rgb8; jpeg compressed bgr8")."""
    ok, data = cv2.imencode("." + ("jpg" if fmt == "jpeg" else fmt), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cv2 cannot encode {fmt}")
    msg = CompressedImage(format=f"rgb8; {fmt} compressed bgr8")
    msg.header.frame_id = frame_id
    msg.data = data.tobytes()
    return msg
