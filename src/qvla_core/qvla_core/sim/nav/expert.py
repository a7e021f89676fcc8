"""A privileged navigation expert behind the :class:`~qvla_core.policy.Policy` protocol.

:class:`NavExpert` knows the scene's map and the robot's true pose (privileged information a learned
policy does not get): it finds the object the instruction names, plans the shortest path to it on
the scene's occupancy grid inflated by the base's radius plus a margin
(:mod:`qvla_core.sim.nav.planner`), and returns the embodiment's waypoints: ``horizon`` poses
``dt`` apart along that path at :data:`SPEED`, each (x forward, y left, yaw counter-clockwise) in
base_link at the observation's instant (REP-103), like the vln_nav robot YAML says. Once within
:data:`GOAL_RADIUS` of the object it asks to stay where it is, facing the object.

Where the privileged information comes from: like the ALOHA expert's ``cube_position=``, ``infer``
takes ``scene=`` and ``pose=`` explicitly; or the expert is built with a ``ground_truth`` (anything
with a ``scene`` and a ``pose_at(stamp)``, e.g. :class:`~qvla_core.sim.nav.env.NavSim`) that it asks
at each observation's stamp. The instruction always comes from the observation.

:class:`RandomObjectBaseline` is the chance baseline: the same planner walking to a random object of
the scene (uniformly, the named one included), ignoring the instruction.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Embodiment
from qvla_core.errors import ObservationError
from qvla_core.policy import ActionChunk, Observation
from qvla_core.sim.nav.controller import Pose2D, relative, wrap
from qvla_core.sim.nav.planner import OccupancyGrid
from qvla_core.sim.nav.scene import BASE_RADIUS, NavObject, NavScene

FloatArray = npt.NDArray[np.float64]

SPEED = 0.6  # m/s along the path: below the base's 0.8 m/s so the controller can keep up
GOAL_RADIUS = 0.75  # stop this close to the named object's centre [m] (success is within 1 m)
SAFETY_MARGIN = 0.15  # clearance kept beyond the base's radius when planning [m]
CORNER_TURN = math.radians(15.0)  # a path vertex turning more than this is a corner
TURN_FIRST = 0.9  # heading error [rad] beyond which the waypoints turn on the spot first
TURN_RATE = 1.2  # rad/s of those turns (the base's limit is 1.5)
MIN_LEG = 0.1  # [m] a path leg shorter than this does not set the heading to turn to first


class GroundTruth(Protocol):
    """What the privileged expert asks for: the scene and the robot's world pose at a time."""

    @property
    def scene(self) -> NavScene: ...

    def pose_at(self, stamp: float) -> Pose2D: ...


class NavExpert:
    """Shortest-path navigation to the named object. See the module docstring.

    Args:
        embodiment: a waypoint embodiment with action channels x, y, yaw (e.g. vln_nav).
        ground_truth: where the scene and pose come from when ``infer`` is not given them.
        speed: path speed of the waypoints [m/s].
        goal_radius: how close to the object's centre it goes [m].
    """

    def __init__(
        self,
        embodiment: Embodiment,
        ground_truth: GroundTruth | None = None,
        speed: float = SPEED,
        goal_radius: float = GOAL_RADIUS,
    ) -> None:
        names = tuple(a.kind for a in embodiment.action)
        if names != ("waypoint_x", "waypoint_y", "waypoint_yaw"):
            raise ValueError(
                f"NavExpert emits (waypoint_x, waypoint_y, waypoint_yaw) per row; the embodiment "
                f"{embodiment.name!r} has action kinds {names}"
            )
        self._embodiment = embodiment
        self.ground_truth = ground_truth
        self.speed = speed
        self.goal_radius = goal_radius
        self._grid: tuple[int, OccupancyGrid] | None = None  # (scene seed, grid)
        self.last_target: NavObject | None = None

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    def reset(self) -> None:
        """Nothing carries over between episodes except the cached map of the last scene."""
        self.last_target = None

    # ------------------------------------------------------------------ Policy protocol
    def infer(
        self, observation: Observation, *, scene: NavScene | None = None, pose: Pose2D | None = None
    ) -> ActionChunk:
        """Waypoints towards the object ``observation.instruction`` names."""
        t0 = time.perf_counter()
        if scene is None or pose is None:
            if self.ground_truth is None:
                raise ObservationError(
                    "the navigation expert is privileged: it needs the scene and the robot's pose "
                    "(pass scene= and pose=, or build it with ground_truth=, e.g. the NavSim)"
                )
            scene = scene if scene is not None else self.ground_truth.scene
            pose = pose if pose is not None else self.ground_truth.pose_at(float(observation.stamp))
        target = self.choose_target(scene, observation.instruction)
        self.last_target = target
        waypoints = self.plan(scene, target, pose)
        t1 = time.perf_counter()
        return ActionChunk(
            actions=waypoints.astype(np.float32),
            channel_names=self._embodiment.action_names,
            dt=self._embodiment.dt,
            observation_stamp=float(observation.stamp),
            latency={"plan": t1 - t0, "total": t1 - t0},
        )

    def choose_target(self, scene: NavScene, instruction: str) -> NavObject:
        """The object the instruction names."""
        target = scene.find_object(instruction)
        if target is None:
            raise ObservationError(
                f"instruction {instruction!r} names no single object of scene {scene.seed} "
                f"(it has: {', '.join(o.name for o in scene.objects)}); say e.g. 'go to the blue box'"
            )
        return target

    # ------------------------------------------------------------------ planning
    def grid(self, scene: NavScene) -> OccupancyGrid:
        """The inflated occupancy grid of ``scene`` (kept for the scene's seed)."""
        if self._grid is None or self._grid[0] != scene.seed:
            self._grid = (scene.seed, OccupancyGrid.from_scene(scene, inflation=BASE_RADIUS + SAFETY_MARGIN))
        return self._grid[1]

    def plan(self, scene: NavScene, target: NavObject, pose: Pose2D) -> FloatArray:
        """(horizon, 3) waypoints in base_link at ``pose`` along the shortest path to ``target``."""
        x, y, yaw = pose
        face = math.atan2(target.y - y, target.x - x)
        stay = np.tile([[x, y, face]], (self._embodiment.horizon, 1))
        if math.hypot(target.x - x, target.y - y) <= self.goal_radius + 0.05:
            return self._within_limits(relative(pose, stay))
        field = self.grid(scene).distance_to_object(target, self.goal_radius)
        path = field.path_from(x, y)
        if path is not None:
            path = path[np.concatenate([[True], np.hypot(*np.diff(path, axis=0).T) > 1e-9])]
        if path is None or len(path) < 2:
            return self._within_limits(relative(pose, stay))
        end_yaw = math.atan2(target.y - path[-1, 1], target.x - path[-1, 0])
        return self._within_limits(relative(pose, self._timed(path, yaw, end_yaw)))

    def _timed(self, path: FloatArray, yaw: float, end_yaw: float) -> FloatArray:
        """World poses at t = dt, 2 dt, ... along ``path``: turn in place first, then ``speed``."""
        horizon, dt = self._embodiment.horizon, self._embodiment.dt
        seg = np.diff(path, axis=0)
        seg_len = np.hypot(seg[:, 0], seg[:, 1])
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        total = float(cum[-1])
        heading = np.arctan2(seg[:, 1], seg[:, 0])
        out = []
        # A differential drive turns on the spot before it drives off in a very different direction
        # (the controller does so beyond its rotate_threshold), at about TURN_RATE.
        # Towards the first leg of some length: the path's first vertex can be a cell away (the base
        # grazing the inflated map), and a heading to it says nothing about the way on.
        first = int(np.argmax(seg_len >= MIN_LEG)) if np.any(seg_len >= MIN_LEG) else 0
        err = wrap(float(heading[first]) - yaw)
        if abs(err) > TURN_FIRST:
            n_turn = min(math.ceil(abs(err) / (TURN_RATE * dt)), horizon)
            out += [(path[0, 0], path[0, 1], wrap(yaw + err * (k + 1) / n_turn)) for k in range(n_turn)]
        # The controller joins waypoints with straight lines: one sampled 0.3 m either side of a
        # doorway's corner would cut it by 0.4 m. So a waypoint never skips a corner (> CORNER_TURN).
        turns = np.abs(np.angle(np.exp(1j * np.diff(heading))))
        corners = cum[1:-1][turns > CORNER_TURN]
        s = 0.0
        while len(out) < horizon:
            ahead = corners[corners > s + 1e-6]
            s = min(s + self.speed * dt, total, float(ahead[0]) if len(ahead) else math.inf)
            i = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(seg_len) - 1))
            p = path[i] + (s - cum[i]) / seg_len[i] * seg[i]
            out.append((p[0], p[1], end_yaw if s >= total - 1e-9 else float(heading[i])))
        return np.asarray(out, dtype=np.float64)

    def _within_limits(self, waypoints: FloatArray) -> FloatArray:
        """Keep the embodiment's position limits by stopping short, never by bending the path.

        The first waypoint outside x/y's limits (e.g. far behind the robot after it has turned
        around) and all after it repeat the last one inside: the robot goes that far and a later plan
        (one per second) takes it on. Yaw only needs wrapping; it is clipped for rounding at +-pi.
        """
        lo = np.array([a.lower for a in self._embodiment.action])
        hi = np.array([a.upper for a in self._embodiment.action])
        out = waypoints.copy()
        bad = np.flatnonzero(np.any((out[:, :2] < lo[:2]) | (out[:, :2] > hi[:2]), axis=1))
        if len(bad):
            k = int(bad[0])
            out[k:] = out[k - 1] if k > 0 else (0.0, 0.0, out[0, 2])
        out[:, 2] = np.clip(out[:, 2], lo[2], hi[2])
        return out


class RandomObjectBaseline(NavExpert):
    """Chance: walks (by the same planner) to an object drawn uniformly per scene, ignoring the words."""

    def __init__(
        self, embodiment: Embodiment, ground_truth: GroundTruth | None = None, seed: int = 0
    ) -> None:
        super().__init__(embodiment, ground_truth)
        self.seed = seed

    def choose_target(self, scene: NavScene, instruction: str) -> NavObject:
        # Drawn from the scene's seed, so the same scene always gets the same guess.
        rng = np.random.default_rng([self.seed, scene.seed])
        return scene.objects[int(rng.integers(0, len(scene.objects)))]
