"""The MuJoCo ALOHA in the loop: a ROS 2 node that looks like the real bimanual ALOHA.

It publishes what the robot YAML says the robot publishes (one sensor_msgs/JointState per arm with the
follower's joint names and raw gripper angles, rgb8 camera images) and executes
trajectory_msgs/JointTrajectory on the controller topics the way joint_trajectory_controller does
(:class:`~qvla_core.sim.trajectory_executor.TrajectoryExecutor`, one per controller, grippers in raw
units). The sim owns time: it steps at 50 Hz of sim time and publishes ``/clock``; every stamp it
publishes, and every trajectory stamp it reads, is on that clock (run the policy node with
``use_sim_time:=true``). The clock never goes back, not even on ``~/reset``.

Topics: ``/clock``; the YAML's joint-state and camera topics; ``~/reward`` (std_msgs/Int32, gym-aloha's
0..4) and ``~/success`` (std_msgs/Bool) every step. Service ``~/reset`` (std_srvs/Trigger): a new
episode with the next seed (or the value the ``seed`` parameter was last set to); the arms hold the
start pose.

Threading: all MuJoCo work (model, physics, EGL rendering) happens in one dedicated thread, the sim
loop; ROS callbacks (trajectories, reset requests) only put items on a thread-safe queue that the loop
drains before each control step. Publishing from the loop thread is safe in rclpy.

Longer than 400 lines because the sim loop, its pacing against real time and the queue it drains
are one thread's protocol with the EGL context it owns. nav_sim_node.py repeats that loop's shape for
the mobile base (listed by `duplicates`); a shared sim-loop base for both is the next clean-up.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.task import Future
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Int32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from qvla_core.errors import ConfigError
from qvla_core.robot_io import RobotConfig, TrajectoryOutput, load_robot_config
from qvla_core.runtime.joint_state import GripperScaling
from qvla_core.sim.aloha_env import ARM_JOINTS, CONTROL_DT, DEFAULT_CAMERAS, Task
from qvla_core.sim.trajectory_executor import TrajectoryExecutor
from qvla_ros.io import conversions as conv
from qvla_ros.io.parameters import declare_all
from qvla_ros.io.sim_parameters import SIM_NODE_PARAMS, validate_update
from qvla_ros.nodes.shutdown import run_sim_node

# The simulated ALOHA's 14 channels, in AlohaSim's order (left arm first); the robot YAML's channels
# are mapped onto these by name.
SIM_CHANNELS: tuple[str, ...] = tuple(
    f"{side}_{j}" for side in ("left", "right") for j in (*ARM_JOINTS, "gripper")
)
STEP_NS = round(CONTROL_DT * 1e9)  # 20 ms of sim time per control step
RESET_TIMEOUT_S = 30.0
STARTUP_TIMEOUT_S = 120.0


@dataclass
class _Trajectory:
    topic: str
    start: float
    names: list[str]
    times_from_start: list[float]
    positions: np.ndarray


@dataclass
class _Seed:
    value: int  # the seed the next ~/reset uses


@dataclass
class _Reset:
    done: threading.Event = field(default_factory=threading.Event)
    message: str = ""


@dataclass
class _Controller:
    topic: str
    joint_names: tuple[str, ...]
    channels: tuple[str, ...]
    sim_index: list[int]
    executor: TrajectoryExecutor | None = None  # made by the sim thread at every episode start


class _Pacer:
    """Holds the loop to ``real_time_factor`` sim seconds per wall second; warns when it cannot."""

    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._anchor: tuple[float, float, float] | None = None  # wall, sim, factor
        self._window = (time.monotonic(), 0.0)  # wall at start, sim seconds stepped since
        self._last_warning = -1e9

    def wait(self, sim_s: float, stop: threading.Event) -> None:
        factor = self._node.real_time_factor
        wall = time.monotonic()
        self._report(wall, factor)
        if factor <= 0.0:
            self._anchor = None
            return
        if self._anchor is None or self._anchor[2] != factor:
            self._anchor = (wall, sim_s, factor)
        due = self._anchor[0] + (sim_s - self._anchor[1]) / factor
        if due > wall:
            stop.wait(due - wall)
        elif wall - due > 0.25:  # behind: do not try to catch up in a burst
            self._anchor = (wall, sim_s, factor)

    def _report(self, wall: float, factor: float) -> None:
        start, stepped = self._window
        stepped += CONTROL_DT
        self._window = (start, stepped)
        if wall - start < 5.0:
            return
        achieved = stepped / (wall - start)
        self._window = (wall, 0.0)
        if factor > 0.0 and achieved < 0.9 * factor and wall - self._last_warning > 30.0:
            self._last_warning = wall
            self._node.get_logger().warning(
                f"the sim runs at {achieved:.2f}x real time, slower than real_time_factor {factor:g} "
                "(rendering is the cost: fewer/smaller images or a lower camera_rate_hz help)"
            )


class SimNode(Node):
    def __init__(self, stop: threading.Event | None = None, **kwargs: Any) -> None:
        """``stop``: set it to end the sim loop (main() sets it from the signal handler)."""
        super().__init__("qvla_sim", **kwargs)
        p, faults = declare_all(self, SIM_NODE_PARAMS)
        if faults:
            raise ConfigError("; ".join(faults))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.task: Task = p["task"]
        self.seed = int(p["seed"])
        self.width, self.height = int(p["image_width"]), int(p["image_height"])
        self.real_time_factor = float(p["real_time_factor"])
        rate = float(p["camera_rate_hz"])
        self.camera_every = 0 if rate <= 0.0 else max(1, round(1.0 / (rate * CONTROL_DT)))

        config_path = p["robot_config"] or str(_installed_aloha_yaml())
        config = load_robot_config(config_path)
        self._wire(config)
        self.config_path = config_path

        # Callbacks -> sim thread: trajectories and reset requests, drained before each control step.
        self._queue: queue.SimpleQueue[_Trajectory | _Reset | _Seed] = queue.SimpleQueue()
        self._stop = stop or threading.Event()
        self._ready = threading.Event()
        self._startup_error: str | None = None
        # Done when the sim loop ends; its result is the error text, or None after a clean stop.
        self.finished: Future[str | None] = Future()
        self._thread = threading.Thread(target=self._run, name="qvla_sim_loop", daemon=True)

        self._clock_pub = (
            self.create_publisher(Clock, "/clock", QoSProfile(depth=10)) if p["publish_clock"] else None
        )
        self._reward_pub = self.create_publisher(Int32, "~/reward", 10)
        self._success_pub = self.create_publisher(Bool, "~/success", 10)
        for ctrl in self._controllers:
            self.create_subscription(
                JointTrajectory,
                ctrl.topic,
                lambda msg, topic=ctrl.topic: self._on_trajectory(topic, msg),
                QoSProfile(depth=10),
            )
        self.create_service(Trigger, "~/reset", self._srv_reset)

    # ---------------------------------------------------------------- wiring (main thread)
    def _wire(self, config: RobotConfig) -> None:
        """Check the robot YAML against the sim and build the publishers for its topics."""
        where = {ch: i for i, ch in enumerate(SIM_CHANNELS)}

        def index(channels: list[str], what: str) -> list[int]:
            unknown = [ch for ch in channels if ch not in where]
            if unknown:
                raise ConfigError(
                    f"{what}: channels {unknown} are not simulated; the sim has {list(SIM_CHANNELS)}"
                )
            return [where[ch] for ch in channels]

        self.grippers = GripperScaling(config.ros.gripper_raw_range)
        self._state_sources = [
            (
                self.create_publisher(JointState, src.topic, QoSProfile(depth=10)),
                src,
                index(src.channels, src.topic),
            )
            for src in config.ros.joint_states
        ]
        self._controllers = []
        for out in config.ros.outputs:
            if not isinstance(out, TrajectoryOutput):
                self.get_logger().warning(f"output {out.topic} ({out.type}) is not simulated; ignored")
                continue
            self._controllers.append(
                _Controller(
                    out.topic, tuple(out.joint_names), tuple(out.channels), index(out.channels, out.topic)
                )
            )
        if not self._controllers:
            raise ConfigError("the robot YAML has no joint_trajectory output for the sim to execute")
        self._cameras: dict[str, Any] = {}
        if self.camera_every:
            for cam in config.ros.cameras:
                if cam.camera not in DEFAULT_CAMERAS:
                    raise ConfigError(
                        f"camera {cam.camera!r} has no simulated counterpart; "
                        f"the sim renders {sorted(DEFAULT_CAMERAS)}"
                    )
                if cam.compressed:
                    raise ConfigError(
                        f"camera topic {cam.topic} is compressed; "
                        "the sim publishes raw sensor_msgs/Image only"
                    )
                self._cameras[cam.camera] = self.create_publisher(Image, cam.topic, QoSProfile(depth=5))

    # ---------------------------------------------------------------- ROS callbacks (enqueue only)
    def _on_set_parameters(self, params: list[Any]) -> Any:
        result = validate_update(params)
        if result.successful:
            for p in params:
                if p.name == "real_time_factor":
                    self.real_time_factor = float(p.value)
                elif p.name == "seed":  # through the queue: a seed set before a reset is taken by it
                    self._queue.put(_Seed(int(p.value)))
        return result

    def _on_trajectory(self, topic: str, msg: JointTrajectory) -> None:
        try:
            start, names, tfs, positions = conv.trajectory_arrays(msg)
        except ValueError as exc:
            self.get_logger().warning(f"{topic}: trajectory rejected: {exc}")
            return
        self._queue.put(_Trajectory(topic, start, names, tfs, positions))

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

    # ---------------------------------------------------------------- lifecycle (main thread)
    def start(self) -> None:
        """Start the sim thread and wait until the model is loaded (or a stop is asked for); raises
        ConfigError if it failed."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._ready.wait(0.1) and not self._stop.is_set():
            if time.monotonic() > deadline:
                raise ConfigError(f"the sim did not start within {STARTUP_TIMEOUT_S:.0f} s")
        if self._startup_error is not None:
            raise ConfigError(self._startup_error)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the sim thread and wait for it; False if it is still running after ``timeout_s``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    # ---------------------------------------------------------------- the sim thread
    def _run(self) -> None:
        try:
            from qvla_core.sim.aloha_env import AlohaSim

            cameras = {name: DEFAULT_CAMERAS[name] for name in self._cameras}
            sim = AlohaSim(self.task, cameras=cameras, width=self.width, height=self.height)
        except Exception as exc:  # missing gym-aloha/MuJoCo, no GL: report to main, which exits
            self._startup_error = f"cannot create the MuJoCo ALOHA ({type(exc).__name__}): {exc}"
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
        episode, seed = 0, self.seed
        next_seed: int | None = None  # set by the seed parameter: the next reset's seed
        t_ns = 0  # the sim clock: never goes back (resets keep counting)
        hold = self._start_episode(sim, seed, t_ns / 1e9)
        self._ready.set()
        names = ", ".join(self._cameras) or "none"
        every = f" every {self.camera_every * CONTROL_DT * 1e3:.0f} ms" if self._cameras else ""
        self.get_logger().info(
            f"sim ready: {self.task}, seed {seed}, robot {self.config_path}, cameras {names} "
            f"({self.width}x{self.height}{every}), real_time_factor {self.real_time_factor:g}"
        )
        pacer = _Pacer(self)
        step = 0
        while not self._stop.is_set() and self.context.ok():
            now = t_ns / 1e9
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Seed):
                    next_seed = item.value
                elif isinstance(item, _Reset):
                    episode, seed = episode + 1, seed + 1 if next_seed is None else next_seed
                    next_seed = None
                    hold = self._start_episode(sim, seed, now)
                    item.message = f"episode {episode} (seed {seed}) started at {now:.3f} s sim time"
                    self.get_logger().info(item.message)
                    item.done.set()
                else:
                    self._execute(item, now)
            sim.step(self._command(hold, now + CONTROL_DT))
            t_ns += STEP_NS
            step += 1
            self._publish(sim, t_ns, render=bool(self._cameras) and (step - 1) % self.camera_every == 0)
            pacer.wait(t_ns / 1e9, self._stop)

    def _start_episode(self, sim: Any, seed: int, now: float) -> np.ndarray:
        """Reset the scene and make every controller hold the start pose; returns it (normalised)."""
        sim.reset(seed)
        q = sim.joint_positions()
        for ctrl in self._controllers:
            initial = [
                self.grippers.to_hardware(ch, float(q[i]))
                for ch, i in zip(ctrl.channels, ctrl.sim_index, strict=True)
            ]
            ctrl.executor = TrajectoryExecutor(ctrl.joint_names, initial)
        return np.asarray(q, dtype=np.float64)

    def _execute(self, item: _Trajectory, now: float) -> None:
        ctrl = next(c for c in self._controllers if c.topic == item.topic)
        assert ctrl.executor is not None
        if not item.times_from_start:  # JTC: an empty trajectory stops and holds
            ctrl.executor.hold(now)
            self.get_logger().info(f"{item.topic}: empty trajectory: holding position")
            return
        if not ctrl.executor.accept(item.start, item.names, item.times_from_start, item.positions, now):
            self.get_logger().warning(f"{item.topic}: trajectory rejected: {ctrl.executor.last_rejection}")

    def _command(self, hold: np.ndarray, at: float) -> np.ndarray:
        """The 14 sim targets (normalised grippers) at sim time ``at``; unmapped channels hold."""
        q = hold.copy()
        for ctrl in self._controllers:
            assert ctrl.executor is not None
            raw = ctrl.executor.target(at)
            for j, (ch, i) in enumerate(zip(ctrl.channels, ctrl.sim_index, strict=True)):
                q[i] = self.grippers.to_normalised(ch, float(raw[j]))
        return q

    def _publish(self, sim: Any, t_ns: int, render: bool) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(conv.clock_msg(t_ns))
        q = sim.joint_positions()
        for pub, src, idx in self._state_sources:
            raw = [
                self.grippers.to_hardware(ch, float(q[i])) for ch, i in zip(src.channels, idx, strict=True)
            ]
            pub.publish(conv.joint_state_msg(src.joint_names, raw, t_ns))
        reward = int(sim.reward())
        self._reward_pub.publish(Int32(data=reward))
        self._success_pub.publish(Bool(data=bool(sim.success())))
        if render:
            stamp = conv.time_from_ns(t_ns)
            for name, rgb in sim.render(list(self._cameras)).items():
                msg = conv.rgb_to_image(rgb, t_ns / 1e9, name)
                msg.header.stamp = stamp
                self._cameras[name].publish(msg)


def _installed_aloha_yaml() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots" / "aloha.yaml"


def main(args: list[str] | None = None) -> None:
    run_sim_node(lambda stop: SimNode(stop=stop), "qvla_sim", args)


if __name__ == "__main__":
    main()
