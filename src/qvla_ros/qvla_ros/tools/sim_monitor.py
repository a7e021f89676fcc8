"""Watch and drive a sim + policy pair over ROS: episodes, success, rates and latencies.

:class:`SimMonitor` is an ordinary rclpy node (the demo's, the closed-loop benchmark's and the tests'
observer): it records what the sim and the policy node publish and calls their services.
:func:`run_episode` plays one episode the way an operator would: pause the policy (it holds), reset
the sim, give the instruction with ``reset: true``, resume, and watch the task reward for a fixed
span of sim time.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Int32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from qvla_core.robot_io import RobotConfig, TrajectoryOutput
from qvla_msgs.msg import ActionChunk as ActionChunkMsg
from qvla_msgs.msg import PolicyStatus
from qvla_msgs.srv import SetInstruction
from qvla_ros.io import conversions as conv

# The policy node's diagnostics this monitor reads: per-stage latency and the safety counters.
_DIAGNOSTIC_KEY = re.compile(r"latency_(\w+)_s|safety_(velocity_clamped|limit_clamped|rejected)_chunks")
SUCCESS_REWARD = 4  # gym-aloha TransferCube/Insertion: 4 = task done
RATE_WINDOW_S = 3.0


@dataclass
class ChunkRecord:
    observation_stamp: float
    first_due: float
    channel_names: list[str]
    actions: np.ndarray
    inference_s: float
    received_sim: float
    received_wall: float
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class CommandRecord:
    """A JointTrajectory as the controller received it."""

    received_sim: float
    received_wall: float  # time.monotonic()
    topic: str
    start: float  # header.stamp [s]; 0 = on arrival
    joint_names: list[str]
    time_from_start: list[float]
    positions: np.ndarray  # (points, joints)


@dataclass
class EpisodeResult:
    seed: int | None
    success: bool
    held: bool  # reward still at SUCCESS_REWARD at the end
    time_to_success: float | None  # sim seconds after the start
    max_reward: int
    chunks: int
    commands: int
    median_inference_ms: float
    start: float  # sim time
    end: float
    # chunks of this episode in which the policy node's safety filter slowed a point to max_velocity,
    # clamped one into position limits, or rejected the chunk (from /diagnostics)
    safety_velocity_clamped: int = 0
    safety_limit_clamped: int = 0
    safety_rejected: int = 0


class _Rates:
    """Messages per wall second per stream, over the last RATE_WINDOW_S."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}
        self._first: dict[str, float] = {}

    def tick(self, stream: str) -> None:
        now = time.monotonic()
        self._first.setdefault(stream, now)
        self._times.setdefault(stream, deque(maxlen=4096)).append(now)

    def rate(self, stream: str) -> float:
        """Messages in the window over the window's length (or the time since the stream began,
        but at least 1 s, so that two messages in a burst do not read as a huge rate)."""
        times = self._times.get(stream)
        if not times:
            return 0.0
        now = time.monotonic()
        recent = sum(1 for t in times if now - t <= RATE_WINDOW_S)
        span = min(RATE_WINDOW_S, max(now - self._first[stream], 1.0))
        return recent / span


class SimMonitor(Node):
    def __init__(
        self,
        config: RobotConfig,
        sim_name: str = "qvla_sim",
        policy_ns: str = "qvla",
        frame_camera: str | None = "cam_high",
        **kwargs: Any,
    ) -> None:
        super().__init__("qvla_sim_monitor", **kwargs)
        self.config = config
        self.lock = threading.Lock()
        self.rates = _Rates()
        self.sim_time = 0.0
        self.clock_walls: deque[tuple[float, float]] = deque(maxlen=100000)  # (sim, monotonic) per /clock
        self.reward = 0
        self.rewards: deque[tuple[float, int]] = deque(maxlen=20000)  # (sim time, reward)
        self.chunks: list[ChunkRecord] = []
        self.commands: deque[CommandRecord] = deque(maxlen=5000)
        self.states: dict[str, deque[tuple[float, list[str], np.ndarray]]] = {}
        self.frames: deque[tuple[float, Image]] = deque(maxlen=40)
        self.status: PolicyStatus | None = None
        self.stages: dict[str, float] = {}
        # the policy node's safety counters since activation
        self.safety = {"velocity_clamped": 0, "limit_clamped": 0, "rejected": 0}
        depth = QoSProfile(depth=100)
        self.create_subscription(Clock, "/clock", self._on_clock, depth)
        self.create_subscription(Int32, f"/{sim_name}/reward", self._on_reward, depth)
        self.create_subscription(Bool, f"/{sim_name}/success", lambda _m: self.rates.tick("sim steps"), depth)
        self.create_subscription(ActionChunkMsg, f"/{policy_ns}/action_chunk", self._on_chunk, depth)
        self.create_subscription(PolicyStatus, f"/{policy_ns}/status", self._on_status, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        for src in config.ros.joint_states:
            self.states[src.topic] = deque(maxlen=3000)
            self.create_subscription(
                JointState, src.topic, lambda m, t=src.topic: self._on_state(t, m), depth
            )
        for out in config.ros.outputs:
            if isinstance(out, TrajectoryOutput):
                self.create_subscription(
                    JointTrajectory, out.topic, lambda m, t=out.topic: self._on_command(t, m), depth
                )
        cam = next((c for c in config.ros.cameras if c.camera == frame_camera), None)
        if cam is not None:
            self.create_subscription(Image, cam.topic, self._on_frame, qos_profile_sensor_data)
        self.reset_client = self.create_client(Trigger, f"/{sim_name}/reset")
        self.instruction_client = self.create_client(SetInstruction, f"/{policy_ns}/set_instruction")
        self.pause_client = self.create_client(Trigger, f"/{policy_ns}/pause")
        self.resume_client = self.create_client(Trigger, f"/{policy_ns}/resume")

    # ---------------------------------------------------------------- callbacks
    def _on_clock(self, msg: Clock) -> None:
        with self.lock:
            self.sim_time = conv.to_sec(msg.clock)
            self.clock_walls.append((self.sim_time, time.monotonic()))

    def _on_reward(self, msg: Int32) -> None:
        with self.lock:
            self.reward = int(msg.data)
            self.rewards.append((self.sim_time, self.reward))

    def _on_chunk(self, msg: ActionChunkMsg) -> None:
        try:
            obs, due, names, actions, latency = conv.action_chunk_arrays(msg)
        except ValueError as exc:
            self.get_logger().warning(f"unreadable action chunk: {exc}")
            return
        self.rates.tick("chunks")
        with self.lock:
            self.chunks.append(
                ChunkRecord(
                    obs, due, names, actions, latency, self.sim_time, time.monotonic(), dict(self.stages)
                )
            )

    def _on_status(self, msg: PolicyStatus) -> None:
        with self.lock:
            self.status = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.hardware_id != "qvla":
                continue
            stages, safety = {}, {}
            for kv in status.values:
                m = re.fullmatch(
                    r"latency_(\w+)_s|safety_(velocity_clamped|limit_clamped|rejected)_chunks", kv.key
                )
                if not m:
                    continue
                try:
                    if m.group(1):
                        stages[m.group(1)] = float(kv.value)
                    else:
                        safety[m.group(2)] = int(kv.value)
                except ValueError:
                    continue
            with self.lock:
                self.stages = stages
                self.safety.update(safety)

    def _on_state(self, topic: str, msg: JointState) -> None:
        self.rates.tick("joint states")
        with self.lock:
            self.states[topic].append(
                (conv.to_sec(msg.header.stamp), list(msg.name), np.asarray(msg.position, dtype=np.float64))
            )

    def _on_command(self, topic: str, msg: JointTrajectory) -> None:
        self.rates.tick("commands")
        try:
            start, names, tfs, positions = conv.trajectory_arrays(msg)
        except ValueError:
            return  # the sim logs and rejects it; nothing to record
        with self.lock:
            self.commands.append(
                CommandRecord(self.sim_time, time.monotonic(), topic, start, names, tfs, positions)
            )

    def _on_frame(self, msg: Image) -> None:
        self.rates.tick("camera")
        with self.lock:
            self.frames.append((conv.to_sec(msg.header.stamp), msg))

    # ---------------------------------------------------------------- queries
    def now(self) -> float:
        with self.lock:
            return self.sim_time

    def wall_at(self, sim_times: np.ndarray) -> np.ndarray:
        """When (time.monotonic()) this process saw /clock reach each sim time (interpolated)."""
        with self.lock:
            table = np.array(self.clock_walls) if self.clock_walls else np.zeros((0, 2))
        if table.shape[0] < 2:
            return np.full(np.shape(sim_times), np.nan)
        return np.interp(sim_times, table[:, 0], table[:, 1], left=np.nan, right=np.nan)

    def command_delays(self) -> tuple[np.ndarray, np.ndarray]:
        """For each trajectory matched to its ActionChunk (by start stamp): observation stamp ->
        arrival at the controller, in sim seconds and in wall seconds (the observation's wall time is
        when /clock reached its stamp here, which lags the sim by one DDS hop, so this is a slight
        underestimate)."""
        with self.lock:
            by_start = {round(c.first_due, 6): c.observation_stamp for c in self.chunks}
            pairs = [
                (by_start[round(c.start, 6)], c.received_sim, c.received_wall)
                for c in self.commands
                if c.start > 0 and round(c.start, 6) in by_start
            ]
        if not pairs:
            return np.zeros(0), np.zeros(0)
        obs, got_sim, got_wall = (np.array(x) for x in zip(*pairs, strict=True))
        return got_sim - obs, got_wall - self.wall_at(obs)

    def chunks_since(self, sim_time: float) -> list[ChunkRecord]:
        with self.lock:
            return [c for c in self.chunks if c.observation_stamp >= sim_time]

    def frame_near(self, stamp: float) -> tuple[float, np.ndarray] | None:
        """The kept camera frame closest to ``stamp`` (decoded RGB), or None."""
        with self.lock:
            if not self.frames:
                return None
            t, msg = min(self.frames, key=lambda f: abs(f[0] - stamp))
        return t, conv.image_to_rgb(msg)

    def wait_sim(self, until: float, timeout_wall: float) -> None:
        deadline = time.monotonic() + timeout_wall
        while self.now() < until:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"sim time is {self.now():.2f} s, waited {timeout_wall:.0f} s for {until:.2f} s: "
                    "is the sim running?"
                )
            time.sleep(0.005)

    # ---------------------------------------------------------------- services
    def call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        return call_service(client, request, timeout)

    def trigger(self, client: Any) -> str:
        response = self.call(client, Trigger.Request())
        if not response.success:
            raise RuntimeError(f"{client.srv_name} failed: {response.message}")
        return str(response.message)

    def instruct(self, text: str) -> None:
        response = self.call(self.instruction_client, SetInstruction.Request(instruction=text, reset=True))
        if not response.success:
            raise RuntimeError(f"set_instruction refused: {response.message}")


class Spinner:
    """Spins an executor in a background thread until :meth:`stop`, which returns only after the
    thread has left spin_once: nothing is destroyed under a running wait (rclpy raises then)."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="qvla-spinner", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.executor.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if self._stop.is_set() or not self.executor.context.ok():
                    return
                raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)


def call_service(client: Any, request: Any, timeout: float) -> Any:
    """Call a service from a thread other than the one spinning the client's node."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise TimeoutError(f"service {client.srv_name} is not available after {timeout:.0f} s")
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no reply from {client.srv_name} within {timeout:.0f} s")
        time.sleep(0.002)
    return future.result()


def run_episode(
    monitor: SimMonitor,
    instruction: str,
    seconds: float,
    reset_sim: bool = True,
    on_tick: Callable[[float, float], None] | None = None,
    timeout_factor: float = 20.0,
) -> EpisodeResult:
    """One episode of ``seconds`` sim time; ``on_tick(start, elapsed)`` (sim seconds) is called about
    4 times a wall second."""
    monitor.trigger(monitor.pause_client)  # the policy holds; a chunk in flight is discarded
    seed = None
    if reset_sim:
        monitor.wait_sim(monitor.now() + 0.2, 60.0)  # the hold lands before the scene changes
        message = monitor.trigger(monitor.reset_client)
        m = re.search(r"seed (\d+)", message)
        seed = int(m.group(1)) if m else None
        monitor.wait_sim(monitor.now() + 0.1, 60.0)  # fresh states and frames of the new scene
    monitor.instruct(instruction)
    with monitor.lock:
        safety_before = dict(monitor.safety)
    monitor.trigger(monitor.resume_client)
    start = monitor.now()
    end = start + seconds
    deadline = time.monotonic() + max(60.0, seconds * timeout_factor)
    next_tick = 0.0
    while monitor.now() < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the episode did not reach sim time {end:.1f} s (now {monitor.now():.1f} s)")
        if on_tick is not None and time.monotonic() >= next_tick:
            on_tick(start, monitor.now() - start)
            next_tick = time.monotonic() + 0.25
        time.sleep(0.01)
    with monitor.lock:
        rewards = [(t, r) for t, r in monitor.rewards if start < t <= end]
        chunks = [c for c in monitor.chunks if start <= c.observation_stamp <= end]
        commands = sum(1 for c in monitor.commands if start < c.received_sim <= end)
        safety = {k: v - safety_before[k] for k, v in monitor.safety.items()}
    first = next((t for t, r in rewards if r >= SUCCESS_REWARD), None)
    latencies = [c.inference_s * 1e3 for c in chunks]
    return EpisodeResult(
        seed=seed,
        success=first is not None,
        held=bool(rewards) and rewards[-1][1] >= SUCCESS_REWARD,
        time_to_success=None if first is None else first - start,
        max_reward=max((r for _, r in rewards), default=0),
        chunks=len(chunks),
        commands=commands,
        median_inference_ms=float(np.median(latencies)) if latencies else float("nan"),
        start=start,
        end=end,
        safety_velocity_clamped=safety["velocity_clamped"],
        safety_limit_clamped=safety["limit_clamped"],
        safety_rejected=safety["rejected"],
    )
