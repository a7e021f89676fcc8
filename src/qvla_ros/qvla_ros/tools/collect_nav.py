"""``qvla-collect --robot vln_nav``: the navigation expert's episodes through ROS 2.

The nodes are those of ``vln_nav_sim.launch.py`` (the nav sim and the policy node with
``policy:=expert_vln_nav``, on the sim's clock) plus the recorder. Per seed, like an operator: hold
the policy, set the sim's ``seed`` and reset it (the sim answers with the scene's instruction, e.g.
"go to the blue box"), start the recorder's episode with that instruction as the task, give it to
the policy and let it go. The episode ends once the base has come to rest (:func:`came_to_rest`:
still for ``REST_S`` of sim time after it moved) or after ``--episode-seconds``; it succeeded if the
base stopped within 1 m of the named object (the sim's ``~/goal_distance``, the SR of
:mod:`qvla_core.sim.nav.metrics`). The recorder takes the camera and ``/odom`` (the YAML's
``ros.recording.actions.source: odometry``), from which ``qvla-convert`` makes the waypoint labels.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qvla_core.sim.nav.episode import held_still
from qvla_core.sim.nav.metrics import SUCCESS_RADIUS
from qvla_ros.tools.bringup import NodeSpec, nav_sim_demo_specs
from qvla_ros.tools.recorder_driver import EpisodeRecord, RecorderDriver, config_dir, recorder_spec

REST_S = 2.0  # still this long (sim time) after moving: the episode is over
MOVED_M = 0.1  # the base has left its start by this much


def came_to_rest(odom: Sequence[tuple[float, float, float, float]], rest_s: float = REST_S) -> float | None:
    """The sim time at which the base came to rest for good, or None while it has not: it moved
    ``MOVED_M`` from its first pose, and over the last ``rest_s`` it :func:`held_still`.
    ``odom``: (stamp, x, y, yaw) in time order."""
    if len(odom) < 2 or odom[-1][0] - odom[0][0] < rest_s:
        return None
    t_end = odom[-1][0]
    window = [o for o in odom if o[0] >= t_end - rest_s]
    if window[0][0] > t_end - rest_s + 0.1:  # a hole in the odometry: not known to be still
        return None
    first, a, b = odom[0], window[0], window[-1]
    moved = math.hypot(b[1] - first[1], b[2] - first[2]) > MOVED_M
    still = held_still([o[1:] for o in window])
    return a[0] if moved and still else None


def history_on_grid(robot_yaml: Path) -> None:
    """A camera history finer than the waypoint grid (vln_nav: 8 frames 0.5 s apart, at 1 Hz) is set
    to the grid's spacing in the variant YAML: the dataset holds one frame per control tick, so
    training could only repeat frames where the policy node would see distinct ones."""
    import sys

    import yaml

    from qvla_core.robot_io import load_robot_config

    data = yaml.safe_load(robot_yaml.read_text())
    dt = 1.0 / float(data["embodiment"]["control_rate_hz"])
    for cam in data["embodiment"]["cameras"]:
        history = cam.get("history") or {}
        if int(history.get("frames", 1)) > 1 and float(history.get("stride_s", 0.0)) < dt:
            print(
                f"qvla-collect: camera {cam['name']}: history stride {history['stride_s']} s -> {dt:g} s "
                "(one dataset frame per waypoint step) in " + str(robot_yaml),
                file=sys.stderr,
            )
            history["stride_s"] = dt
    robot_yaml.write_text(yaml.safe_dump(data, sort_keys=False))
    load_robot_config(robot_yaml)


def node_specs(args: argparse.Namespace, robot_yaml: Path, bags: Path) -> list[NodeSpec]:
    values = {
        "robot_config": str(robot_yaml),
        "policy": "expert_vln_nav",
        "device": "cpu",
        "dtype": "float32",
        "seed": str(args.seeds[0]),
        "camera_rate_hz": str(args.camera_rate),
        "real_time_factor": str(args.real_time_factor),
        "log_level": "warn",
    }
    return [*nav_sim_demo_specs(values, config_dir()), recorder_spec(robot_yaml, bags)]


class NavCollector(RecorderDriver):
    """One navigation episode after another through the running nav sim, policy and recorder."""

    def __init__(self, monitor: Any, seconds: float, real_time_factor: float = 1.0) -> None:
        from nav_msgs.msg import Odometry
        from std_msgs.msg import Float32

        super().__init__(monitor, "qvla_nav_sim")
        self.seconds, self.real_time_factor = seconds, real_time_factor
        self._odom: list[tuple[float, float, float, float]] = []
        self._distance = math.inf
        self._since = math.inf  # odometry older than this is of the previous episode
        monitor.create_subscription(Odometry, "/odom", self._on_odom, 50)
        monitor.create_subscription(Float32, "/qvla_nav_sim/goal_distance", self._on_distance, 10)

    def _on_odom(self, msg: Any) -> None:
        from qvla_ros.io.conversions import to_sec

        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        sample = (to_sec(msg.header.stamp), float(p.x), float(p.y), 2.0 * math.atan2(q.z, q.w))
        with self._lock:
            if sample[0] >= self._since:
                self._odom.append(sample)

    def _on_distance(self, msg: Any) -> None:
        with self._lock:
            self._distance = float(msg.data)

    def episode(self, seed: int) -> EpisodeRecord:
        message = self.reset_to(seed)
        task = message.split(": ", 1)[1] if ": " in message else ""
        if not task:
            raise RuntimeError(f"the nav sim's reset named no instruction: {message!r}")
        with self._lock:
            self._odom, self._since = [], self.monitor.now()
        start = self.begin(task)
        wall_limit = self.seconds / max(self.real_time_factor, 0.25) * 4 + 60
        deadline = time.monotonic() + wall_limit
        arrived = None
        while arrived is None and time.monotonic() < deadline:
            time.sleep(0.1)
            with self._lock:
                odom = list(self._odom)
            arrived = came_to_rest(odom)
            if odom and odom[-1][0] - start >= self.seconds:
                break
        if arrived is None and time.monotonic() >= deadline:
            raise TimeoutError(f"seed {seed}: the sim did not run {self.seconds:g} s in {wall_limit:.0f} s")
        end = self.monitor.now()
        with self._lock:
            success = arrived is not None and self._distance <= SUCCESS_RADIUS
        return self.finish(seed, task, start, arrived if arrived is not None else end, success)
