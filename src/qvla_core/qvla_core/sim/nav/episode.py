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
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.policy import Observation, Policy
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


def at_rest(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Moved < 5 cm and turned < 0.05 rad from pose ``a`` to pose ``b``: the base has stopped."""
    return math.hypot(b[0] - a[0], b[1] - a[1]) < 0.05 and abs(wrap(b[2] - a[2])) < 0.05


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
    rest_steps = round(stop_window_s / CONTROL_DT)
    moved = stopped = False
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
            start = sim.pose_at(chunk.observation_stamp)
            follower.set_path(compose(start, chunk.actions), start=start)
        v, w = follower.command(sim.pose(), CONTROL_DT)
        sim.step(v, w)
        step += 1
        poses.append(sim.pose())
        if len(poses) > rest_steps:
            moved = moved or math.hypot(poses[-1][0] - poses[0][0], poses[-1][1] - poses[0][1]) > 0.1
            if moved and at_rest(poses[-1 - rest_steps], poses[-1]):
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
