"""The robot stand-in of bench/soak.py, run in a process of its own (multiprocessing, spawn).

It publishes what an ALOHA publishes (four rgb8 cameras, two JointState streams, current wall-clock
stamps) over DDS and plays two joint_trajectory_controllers: every JointTrajectory it receives is
recorded with its arrival time and executed (qvla_core.sim.trajectory_executor), and the joint
states report the executed command. Being a separate process, its GIL and garbage collector never
pause the process that measures, and the measuring process's never delay a recorded arrival.

The parent talks to it over a multiprocessing Pipe, one request at a time:
  ("stale", camera, pause_s, settle_s, limit_s) -> dict   stop one camera, measure the hold, restart it
  ("sent_before", stamp)              -> dict   per input, how many messages were sent up to stamp
  ("counts",)                          -> dict   trajectories / holds received, rejections, RSS
  ("pause_all",) / ("resume_all",)     -> float  every input stops / restarts (exact loss counts)
  ("stop",)                            -> "ok"
"""

from __future__ import annotations

import bisect
import gc
import threading
import time
from array import array
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from qvla_core.robot_io import RobotConfig, TrajectoryOutput, load_robot_config
from qvla_core.sim.trajectory_executor import TrajectoryExecutor


def stamp_of(seconds: float) -> Time:
    sec = int(seconds)
    return Time(sec=sec, nanosec=int((seconds - sec) * 1e9))


def to_sec(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def is_hold(msg: JointTrajectory) -> bool:
    """The policy node's hold: header stamp 0 ("start now" for a JTC) and a single point."""
    return to_sec(msg.header.stamp) == 0.0 and len(msg.points) == 1


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        lines = status.readlines()
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


class StandIn:
    def __init__(self, config: RobotConfig, camera_hz: float, state_hz: float) -> None:
        self.config = config
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("soak_robot", context=self.context)
        self.camera_hz, self.state_hz = camera_hz, state_hz
        # _cam_lock / _state_lock: what is paused and what was sent (a pause then returns the true
        # last frame). _traj_lock: received trajectories and the controllers. Arrival times are
        # taken before any lock.
        self._cam_lock, self._state_lock = threading.Lock(), threading.Lock()
        self._traj_lock = threading.Lock()
        self.paused: set[str] = set()
        self.sent: dict[str, array] = {}  # input name (camera or joint-state topic) -> stamps sent
        self.trajs: deque[tuple[float, str, bool]] = deque(maxlen=20000)  # (arrival, topic, hold)
        self.n_commands: dict[str, int] = {}
        self.n_holds: dict[str, int] = {}
        self.rejections: list[str] = []
        self.max_gap = {"camera": 0.0, "state": 0.0}  # longest time between two ticks since counts()
        self.late_camera_ticks = 0  # camera ticks skipped because the stream thread fell behind
        rng = np.random.default_rng(0)
        sizes = {c.name: c for c in config.embodiment.cameras}
        self.frames: dict[str, tuple[Any, Image]] = {}
        for cam in config.ros.cameras:
            spec = sizes[cam.camera]
            frame = Image(height=spec.height, width=spec.width, encoding="rgb8", step=spec.width * 3)
            frame.data = rng.integers(0, 255, (spec.height, spec.width, 3), dtype=np.uint8).tobytes()
            frame.header.frame_id = cam.camera
            pub = self.node.create_publisher(Image, cam.topic, qos_profile_sensor_data)
            self.frames[cam.camera] = (pub, frame)
            self.sent[cam.camera] = array("d")
        self.controllers: dict[str, TrajectoryExecutor] = {}
        where: dict[str, tuple[str, int]] = {}
        for out in config.ros.outputs:
            if isinstance(out, TrajectoryOutput):
                start = [self._start_position(ch) for ch in out.channels]
                self.controllers[out.topic] = TrajectoryExecutor(out.joint_names, start)
                where.update({ch: (out.topic, j) for j, ch in enumerate(out.channels)})
                self.n_commands[out.topic] = self.n_holds[out.topic] = 0
                self.node.create_subscription(
                    JointTrajectory, out.topic, lambda m, t=out.topic: self._on_traj(t, m), 10
                )
        self.states = {}
        for src in config.ros.joint_states:
            pub = self.node.create_publisher(JointState, src.topic, 10)
            self.states[src.topic] = (pub, list(src.joint_names), [where.get(ch) for ch in src.channels])
            self.sent[src.topic] = array("d")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._spin, daemon=True),
            threading.Thread(target=self._stream, args=(camera_hz, self._publish_cameras), daemon=True),
            threading.Thread(target=self._stream, args=(state_hz, self._publish_states), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _start_position(self, channel: str) -> float:
        raw = self.config.ros.gripper_raw_range.get(channel)
        if raw is not None:
            return float(np.clip(0.0, min(raw), max(raw)))
        spec = next(c for c in self.config.embodiment.action if c.name == channel)
        return float(np.clip(0.0, spec.lower, spec.upper))

    # ------------------------------------------------------------------ threads
    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def _stream(self, hz: float, publish: Any) -> None:
        period = 1.0 / hz
        kind = "camera" if publish == self._publish_cameras else "state"
        next_tick = last = time.time()
        while not self._stop.is_set():
            now = time.time()
            self.max_gap[kind] = max(self.max_gap[kind], now - last)
            last = now
            publish(now)
            next_tick += period
            now = time.time()
            if now > next_tick + period:
                # Behind by more than a tick (a loaded machine): a real driver drops the frame
                # instead of sending a burst; so does this one, and counts it.
                skipped = int((now - next_tick) / period)
                next_tick += skipped * period
                if publish == self._publish_cameras:
                    self.late_camera_ticks += skipped
            time.sleep(max(0.0, next_tick - time.time()))

    def _publish_cameras(self, now: float) -> None:
        with self._cam_lock:
            for cam, (pub, frame) in self.frames.items():
                if cam in self.paused:
                    continue
                stamp = time.time()
                frame.header.stamp = stamp_of(stamp)
                pub.publish(frame)
                self.sent[cam].append(stamp)

    def _publish_states(self, now: float) -> None:
        with self._state_lock:
            for topic, (pub, names, sources) in self.states.items():
                if topic in self.paused:
                    continue
                with self._traj_lock:
                    q = [
                        0.0 if s is None else float(self.controllers[s[0]].target(now)[s[1]]) for s in sources
                    ]
                msg = JointState(name=names, position=q)
                msg.header.stamp = stamp_of(now)
                pub.publish(msg)
                self.sent[topic].append(now)

    def _on_traj(self, topic: str, msg: JointTrajectory) -> None:
        arrival = time.time()
        hold = is_hold(msg)
        with self._traj_lock:
            self.trajs.append((arrival, topic, hold))
            if hold:
                self.n_holds[topic] += 1
            else:
                self.n_commands[topic] += 1
            ok = self.controllers[topic].accept(
                to_sec(msg.header.stamp),
                list(msg.joint_names),
                [to_sec(p.time_from_start) for p in msg.points],
                np.array([list(p.positions) for p in msg.points]),
                arrival,
            )
            if not ok and len(self.rejections) < 100:
                self.rejections.append(f"{topic}: {self.controllers[topic].last_rejection}")

    # ------------------------------------------------------------------ requests
    def stale(self, camera: str, pause_s: float, settle_s: float, limit_s: float) -> dict[str, Any]:
        """Stop one camera for pause_s, then restart it. Per controller: when the hold came after the
        camera's last frame; whether the node was already holding then (another fault: it sends no
        second hold); commands after the hold, and commands later than limit_s after the last frame,
        before the restart (both must be none); when commands came back after the restart."""
        with self._cam_lock:
            self.paused.add(camera)
            t_last = self.sent[camera][-1]  # the last frame's stamp (taken right before publishing)
        time.sleep(pause_s)
        with self._cam_lock:
            self.paused.discard(camera)
            t_resume = time.time()
        time.sleep(settle_s)
        with self._traj_lock:
            trajs = list(self.trajs)
        per_topic = {}
        for topic in self.controllers:
            before = [h for t, top, h in trajs if top == topic and t <= t_last]
            mine = [(t, h) for t, top, h in trajs if top == topic and t > t_last]
            hold = next((t for t, h in mine if h and t <= t_resume), None)
            after = [t for t, h in mine if not h and hold is not None and hold < t <= t_resume]
            late = [t for t, h in mine if not h and t_last + limit_s < t <= t_resume]
            recovered = next((t for t, h in mine if not h and t > t_resume), None)
            # What the controller executes at the limit: the last trajectory it received by then.
            by_limit = [h for t, top, h in trajs if top == topic and t <= t_last + limit_s]
            per_topic[topic] = {
                "held_at_limit": bool(by_limit) and by_limit[-1],
                "hold_delay_s": None if hold is None else hold - t_last,
                "already_holding": bool(before) and before[-1],
                "commands_after_hold": len(after),
                "commands_after_limit": len(late),
                "commands_before_hold": sum(1 for t, h in mine if not h and (hold is None or t < hold)),
                "recovery_s": None if recovered is None else recovered - t_resume,
            }
        return {"camera": camera, "t_last": t_last, "t_resume": t_resume, "topics": per_topic}

    def sent_before(self, stamp: float) -> dict[str, int]:
        # No lock: appends are atomic under the GIL and stamps only grow.
        return {name: bisect.bisect_right(stamps, stamp) for name, stamps in self.sent.items()}

    def counts(self) -> dict[str, Any]:
        gaps, self.max_gap = self.max_gap, {"camera": 0.0, "state": 0.0}
        with self._traj_lock:
            return {
                "max_gap_s": gaps,
                "commands": dict(self.n_commands),
                "holds": dict(self.n_holds),
                "rejections": list(self.rejections),
                "late_camera_ticks": self.late_camera_ticks,
                "sent": {k: len(v) for k, v in self.sent.items()},
                "rss_mb": rss_mb(),
            }

    def pause_all(self) -> float:
        with self._cam_lock, self._state_lock:
            self.paused.update(self.sent)
            return time.time()

    def resume_all(self) -> float:
        with self._cam_lock, self._state_lock:
            self.paused.clear()
            return time.time()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def run(conn: Connection, robot_config: str, camera_hz: float, state_hz: float) -> None:
    """Process entry point: serve the parent's requests until ("stop",)."""
    config = load_robot_config(robot_config)
    # Everything imported so far (rclpy, numpy, qvla_core) leaves the collector: a full collection
    # over it would stall the streaming and recording threads (new objects are still collected).
    gc.collect()
    gc.freeze()
    robot = StandIn(config, camera_hz, state_hz)
    conn.send("ready")
    try:
        while True:
            req = conn.recv()
            if req[0] == "stale":
                conn.send(robot.stale(req[1], req[2], req[3], req[4]))
            elif req[0] == "sent_before":
                conn.send(robot.sent_before(req[1]))
            elif req[0] == "counts":
                conn.send(robot.counts())
            elif req[0] == "pause_all":
                conn.send(robot.pause_all())
            elif req[0] == "resume_all":
                conn.send(robot.resume_all())
            elif req[0] == "stop":
                break
            else:
                conn.send(ValueError(f"unknown request {req[0]!r}"))
    finally:
        robot.close()
        conn.send("ok")
