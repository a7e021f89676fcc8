"""Run a waypoint policy on the navigation sim directly (no ROS) and measure the episode.

Every ``inference_period_s`` of sim time the policy gets an :class:`~qvla_core.policy.Observation`
(the camera's frame history if ``render``, else no images; no state; the scene's instruction;
stamped with sim time) and returns waypoints in base_link at that instant; they become the
controller's new path (the YAML's chunking mode ``replace``), placed in the world with the pose at
the observation's stamp. The controller drives the base at 20 Hz.

The episode ends when the robot has been at rest (moved < 5 cm and turned < 0.05 rad) for
``stop_window_s`` after moving, or after ``max_time_s``. A policy "stops" by asking to stay put.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.policy import ActionChunk, Observation, Policy
from qvla_core.sim.nav.controller import PathFollower, compose, wrap
from qvla_core.sim.nav.env import CONTROL_DT, NavSim
from qvla_core.sim.nav.metrics import NavMetrics, episode_metrics, shortest_path_length
from qvla_core.sim.nav.scene import NavScene

FloatArray = npt.NDArray[np.float64]


@dataclass
class EpisodeLog:
    seed: int
    instruction: str
    poses: FloatArray  # (N, 3) world poses, one per control step, the start first
    collisions: int
    stopped: bool
    sim_time: float
    infer_s: float  # total seconds spent in policy.infer
    render_s: float  # total seconds spent rendering
    metrics: NavMetrics


STILL_M, STILL_RAD = 0.05, 0.05  # a base that stays this close to a pose has not moved


def held_still(poses: Sequence[tuple[float, float, float]]) -> bool:
    """Every pose within ``STILL_M`` and ``STILL_RAD`` of the first: the base stood still throughout,
    not merely came back (a base turning to and fro ends where it began, and has not stopped)."""
    x0, y0, a0 = poses[0]
    return all(math.hypot(x - x0, y - y0) < STILL_M and abs(wrap(a - a0)) < STILL_RAD for x, y, a in poses)


class RestDetector:
    """Says when a drive is over: once ``window`` control steps have passed, the base has been
    more than 10 cm from ``start`` at some step and has :func:`held_still` over the last
    ``window`` steps."""

    def __init__(self, start: tuple[float, float, float], window: int) -> None:
        self._start, self._window = start, window
        self._recent: deque[tuple[float, float, float]] = deque([start], maxlen=window + 1)
        self._moved = False

    def update(self, pose: tuple[float, float, float]) -> bool:
        """The pose after one more control step; True when the base has stopped."""
        self._recent.append(pose)
        if len(self._recent) <= self._window:
            return False
        self._moved = self._moved or math.hypot(pose[0] - self._start[0], pose[1] - self._start[1]) > 0.1
        return self._moved and held_still(self._recent)


def follow_chunk(sim: NavSim, follower: PathFollower, chunk: ActionChunk) -> None:
    """The chunk's waypoints (base_link at its observation stamp) become the follower's path in the
    world, placed with the pose the base had at that stamp (the YAML's chunking mode ``replace``)."""
    start = sim.pose_at(chunk.observation_stamp)
    follower.set_path(compose(start, chunk.actions), start=start)


def run_episode(
    sim: NavSim,
    policy: Policy,
    seed: int | NavScene,
    *,
    max_time_s: float = 90.0,
    inference_period_s: float = 1.0,
    stop_window_s: float = 2.0,
    render: bool = False,
    follower: PathFollower | None = None,
) -> EpisodeLog:
    """One episode of ``policy`` in the scene of ``seed`` (or a given scene)."""
    scene = sim.reset(seed)
    policy.reset()
    follower = follower or PathFollower(sim.limits)
    emb = policy.embodiment
    cam = emb.cameras[0] if emb.cameras else None
    frames: deque[np.ndarray] = deque()
    every = max(1, round(inference_period_s / CONTROL_DT))
    stride = max(1, round(cam.history.stride_s / CONTROL_DT)) if cam is not None else 1
    poses = [sim.pose()]
    infer_s = render_s = 0.0
    rest = RestDetector(poses[0], round(stop_window_s / CONTROL_DT))
    stopped = False
    step = 0
    while sim.time < max_time_s - 1e-9:
        if render and cam is not None and step % stride == 0:
            t = time.perf_counter()
            frames.append(sim.render())
            render_s += time.perf_counter() - t
            while len(frames) > cam.history.frames:
                frames.popleft()
        if step % every == 0:
            images = {}
            if render and cam is not None:
                # Before the history has filled, the oldest frame stands in for the missing ones.
                hist = [frames[0]] * (cam.history.frames - len(frames)) + list(frames)
                images = {cam.name: np.stack(hist)}
            obs = Observation(
                images=images,
                state=np.zeros(0, dtype=np.float32),
                instruction=scene.instruction,
                stamp=sim.time,
            )
            t = time.perf_counter()
            chunk = policy.infer(obs)
            infer_s += time.perf_counter() - t
            follow_chunk(sim, follower, chunk)
        v, w = follower.command(sim.pose(), CONTROL_DT)
        sim.step(v, w)
        step += 1
        poses.append(sim.pose())
        if rest.update(poses[-1]):
            stopped = True
            break
    p = np.asarray(poses, dtype=np.float64)
    goal = scene.target_object
    metrics = episode_metrics(
        p[:, :2],
        (goal.x, goal.y),
        shortest_path_length(scene),
        collisions=sim.collisions,
        stopped=stopped,
        others=[(o.x, o.y) for o in scene.objects if o is not goal],
    )
    return EpisodeLog(
        scene.seed, scene.instruction, p, sim.collisions, stopped, sim.time, infer_s, render_s, metrics
    )
