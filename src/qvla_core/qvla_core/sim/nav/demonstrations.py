"""Navigation demonstrations straight from the sim: the expert drives, the camera and odometry are kept.

The ROS 2 path (``qvla-collect --robot vln_nav``: nav_sim_node, policy_node with the expert, the
recorder, qvla-convert) runs at about 2x real time, ~8 s a scene. The learned navigation policy needs
far more scenes than that gives in an afternoon (docs/bench/nav_learned.md), so this module runs the
same sim, expert and local controller in one process (:func:`~qvla_core.sim.nav.episode.run_episode`'s
loop, ~20x real time) and labels the frames exactly as qvla-convert labels a recording: each
frame's action row is the base's pose at the next frame's instant in base_link at this one's
(:mod:`qvla_core.data.waypoints`), from the sim's odometry; the last frame's row is the rest of the
way to where the episode ended.

Frames are taken ``phases`` times per waypoint period (at 4: every 0.25 s); frame ``k`` of phase
``p`` is at ``p / phases + k`` seconds. Each phase becomes its own dataset episode at the
embodiment's rate (1 Hz for vln_nav), so the camera history (1 frame a second) and the waypoint
spacing are what the robot YAML says, and one drive gives ``phases`` episodes of shifted views. Why
not more frames in one episode: the dataset's waypoint labels compose consecutive rows, so the
dataset rate must be the waypoint rate.

Perturbations (``perturb_every_s`` > 0; DART, Laskey et al. 2017, done by moving the state rather
than the action): every so often, at a waypoint tick, the base is put down at a nearby pose (up to
``PERTURB_SHIFT`` m off, ``PERTURB_TURN`` rad turned, anywhere the base fits, closer to walls than
the expert would go) and the expert carries on from there. The drive is cut at each of these jumps,
so every episode is continuous odometry and the labels stay what the base did; what the episodes
after a jump add is the expert getting back on course from where a learner's own errors put it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.data.waypoints import WaypointLayout, relative
from qvla_core.policy import Observation, Policy
from qvla_core.sim.nav.controller import PathFollower, wrap
from qvla_core.sim.nav.env import CONTROL_DT, NavSim
from qvla_core.sim.nav.episode import RestDetector, follow_chunk
from qvla_core.sim.nav.planner import OccupancyGrid
from qvla_core.sim.nav.scene import BASE_RADIUS, NavScene

ImageArray = npt.NDArray[np.uint8]

PERTURB_SHIFT = 0.6  # [m] forward/sideways, uniform in +-
PERTURB_TURN = 1.0  # [rad], uniform in +-
PERTURB_CLEARANCE = 0.03  # [m] beyond the base's radius: a perturbed pose may nearly touch a wall


@dataclass
class DemoEpisode:
    """One dataset episode: frames 1/rate apart, an action row and an image per frame."""

    seed: int
    phase: int
    instruction: str
    images: list[ImageArray]  # (H, W, 3) RGB
    actions: npt.NDArray[np.float32]  # (N, action width): one-step rows as qvla-convert writes them
    poses: npt.NDArray[np.float64]  # (N, 3) the base's world pose (x, y, yaw) at each frame
    start_s: float  # sim time of the first frame


@dataclass
class DemoDrive:
    """What one expert drive produced: its episodes, and whether the expert reached the object."""

    scene: NavScene
    episodes: list[DemoEpisode]
    success: bool
    collisions: int
    sim_time: float


def drive(
    sim: NavSim,
    expert: Policy,
    seed: int | NavScene,
    *,
    phases: int = 4,
    max_time_s: float = 60.0,
    stop_window_s: float = 2.0,
    success_radius: float = 1.0,
    perturb_every_s: float = 0.0,
    rng: np.random.Generator | None = None,
) -> DemoDrive:
    """Run ``expert`` once in the scene of ``seed`` and cut the drive into ``phases`` episodes per
    stretch between perturbations (see the module docstring)."""
    emb = expert.embodiment
    if not WaypointLayout.applies(emb):
        raise ValueError(f"embodiment {emb.name!r} has no waypoint actions: nothing to label from odometry")
    if len(emb.cameras) != 1:
        raise ValueError(f"embodiment {emb.name!r}: one camera expected, it has {len(emb.cameras)}")
    period = 1.0 / emb.control_rate_hz
    every = round(period / CONTROL_DT)
    if phases < 1 or every % phases:
        raise ValueError(f"phases must divide the {every} control steps of a waypoint period (got {phases})")
    frame_every = every // phases
    scene = sim.reset(seed)
    expert.reset()
    follower = PathFollower(sim.limits)
    stamps: list[float] = []
    poses: list[tuple[float, float, float]] = []
    images: list[ImageArray] = []
    rest_steps = round(stop_window_s / CONTROL_DT)
    rest = RestDetector(sim.pose(), rest_steps)
    step = 0
    rng = rng if rng is not None else np.random.default_rng(scene.seed)
    grid = (
        OccupancyGrid.from_scene(scene, inflation=BASE_RADIUS + PERTURB_CLEARANCE)
        if perturb_every_s
        else None
    )
    next_jump = rng.exponential(perturb_every_s) if perturb_every_s else math.inf
    cuts: list[tuple[int, tuple[float, float, float]]] = []  # (first frame after a jump, pose before it)
    while sim.time < max_time_s - 1e-9:
        if step % every == 0 and sim.time >= next_jump and grid is not None:
            before = sim.pose()
            if _jump(sim, grid, rng):
                cuts.append((len(stamps), before))
                rest = RestDetector(sim.pose(), rest_steps)
            next_jump = sim.time + rng.exponential(perturb_every_s)
        if step % frame_every == 0:
            stamps.append(sim.time)
            poses.append(sim.pose())
            images.append(np.ascontiguousarray(sim.render()))
        if step % every == 0:
            obs = Observation(
                images={}, state=np.zeros(0, np.float32), instruction=scene.instruction, stamp=sim.time
            )
            follow_chunk(sim, follower, expert.infer(obs))
        v, w = follower.command(sim.pose(), CONTROL_DT)
        sim.step(v, w)
        step += 1
        if rest.update(sim.pose()):
            break
    end = np.asarray(sim.pose(), dtype=np.float64)
    target = scene.target_object
    success = math.hypot(end[0] - target.x, end[1] - target.y) <= success_radius
    layout = WaypointLayout(emb)
    episodes = []
    bounds = [0, *(c for c, _ in cuts), len(stamps)]
    ends = [*(np.asarray(b, dtype=np.float64) for _, b in cuts), end]
    for a, b, last in zip(bounds[:-1], bounds[1:], ends, strict=True):
        for p in range(min(phases, b - a)):
            idx = list(range(a + p, b, phases))
            ps = np.asarray([poses[i] for i in idx], dtype=np.float64)
            rows = [layout.to_row(relative(ps[k], ps[k + 1 : k + 2])[0]) for k in range(len(idx) - 1)]
            rows.append(layout.to_row(relative(ps[-1], last[None])[0]))
            images_p = [images[i] for i in idx]
            episodes.append(
                DemoEpisode(scene.seed, p, scene.instruction, images_p, np.stack(rows), ps, stamps[idx[0]])
            )
    return DemoDrive(scene, episodes, success, sim.collisions, sim.time)


def _jump(sim: NavSim, grid: OccupancyGrid, rng: np.random.Generator, tries: int = 20) -> bool:
    """Put the base down at a random nearby pose where it fits; False if none was found."""
    x, y, yaw = sim.pose()
    for _ in range(tries):
        fwd, side = rng.uniform(-PERTURB_SHIFT, PERTURB_SHIFT, size=2)
        nx = x + fwd * math.cos(yaw) - side * math.sin(yaw)
        ny = y + fwd * math.sin(yaw) + side * math.cos(yaw)
        if grid.is_free(nx, ny) and grid.line_free((x, y), (nx, ny)):
            sim.set_pose((nx, ny, float(wrap(yaw + rng.uniform(-PERTURB_TURN, PERTURB_TURN)))))
            return True
    return False
