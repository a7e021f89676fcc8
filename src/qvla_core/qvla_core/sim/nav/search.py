"""A searching navigation expert: it must see the named object before it may drive to it.

:class:`NavExpert` knows where every object is and drives the shortest path to the named one, through
doors a camera cannot tell apart; in most scenes (88% of the held-out ones) the object cannot be seen
from the start, so a learner that imitates it from camera frames learns an average over where hidden
objects happened to be (docs/bench/nav_learned.md). :class:`SearchingExpert` shows a search instead,
as people do when asked to find something (Habitat-Web, Ramrakhya et al. 2022):

1. **Look around** first: turn on the spot, counter-clockwise, until the camera has swept the whole
   circle (``2 pi`` minus its field of view).
2. **Go to it once it is seen**: the named object in the camera's field of view, within
   :data:`VIEW_RANGE`, with a clear line of sight. From then on it drives the shortest path to it
   (:meth:`NavExpert.plan`) and stops there.
3. **Otherwise explore**: drive towards the nearest part of the map the camera has not yet swept
   (frontier exploration, Yamauchi 1997), keeping that goal until it has been seen.

What is still privileged: the map of walls and objects (for planning and for what the camera has
swept) and the robot's pose, not where the named object is. The camera model is a ray fan over the
uninflated map, the same line of sight :func:`~qvla_core.sim.nav.metrics.target_visibility` uses.
The state it keeps (what was swept, whether the object was seen, how far it has turned) is reset per
scene; a learned policy has only its camera history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Embodiment
from qvla_core.sim.nav.controller import Pose2D, relative, wrap
from qvla_core.sim.nav.expert import TURN_RATE, GroundTruth, NavExpert
from qvla_core.sim.nav.metrics import HALF_FOV, in_sight
from qvla_core.sim.nav.planner import OccupancyGrid, geodesic_from, string_pull
from qvla_core.sim.nav.scene import NavObject, NavScene

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

VIEW_RANGE = 6.0  # [m] an object farther than this is not taken as seen (a few pixels at 128x96)
RAYS = 64  # rays across the field of view when marking what the camera swept
LOOK_DONE = 0.25  # [rad] of look-around left that is not worth a turn (controller tolerance: 0.15)
MIN_FRONTIER_M2 = 0.5  # unswept free areas smaller than this (behind an object) are not worth a trip


@dataclass
class _Search:
    """What the searcher remembers within one scene."""

    seed: int
    swept: BoolArray  # cells of the planning grid the camera has seen
    opaque: OccupancyGrid  # walls and objects, uninflated: what blocks the camera
    found: bool = False
    turn_left: float = 0.0  # [rad] of the look-around still to turn
    last_yaw: float | None = None
    goal: tuple[int, int] | None = None  # the unswept cell it is heading for


class SearchingExpert(NavExpert):
    """Looks around, explores the unswept map, goes to the named object once seen (module docstring).

    Args:
        embodiment: a waypoint embodiment with action channels x, y, yaw (e.g. vln_nav).
        ground_truth: where the scene and pose come from when ``infer`` is not given them.
        view_range: how far the named object can be and still count as seen [m].
        half_fov: the camera's horizontal half field of view [rad].
    """

    def __init__(
        self,
        embodiment: Embodiment,
        ground_truth: GroundTruth | None = None,
        view_range: float = VIEW_RANGE,
        half_fov: float = HALF_FOV,
    ) -> None:
        super().__init__(embodiment, ground_truth)
        self.view_range = view_range
        self.half_fov = half_fov
        self._search: _Search | None = None

    def reset(self) -> None:
        super().reset()
        self._search = None

    @property
    def found(self) -> bool:
        """Whether the named object has been seen in this scene."""
        return self._search is not None and self._search.found

    def plan(self, scene: NavScene, target: NavObject, pose: Pose2D) -> FloatArray:
        """(horizon, 3) waypoints in base_link at ``pose``: look around, explore, or go to ``target``."""
        s = self._memory(scene)
        self._look(s, target, pose)
        if s.found:
            return super().plan(scene, target, pose)
        if s.turn_left > LOOK_DONE:
            return self._turn(pose, s.turn_left)
        path = self._explore(scene, s, pose)
        if path is None:  # nothing left unswept that it can reach: turn where it is
            return self._turn(pose, 2 * math.pi)
        end_yaw = math.atan2(path[-1, 1] - path[-2, 1], path[-1, 0] - path[-2, 0])
        return self._within_limits(relative(pose, self._timed(path, pose[2], end_yaw)))

    # ------------------------------------------------------------------ memory and the camera
    def _memory(self, scene: NavScene) -> _Search:
        if self._search is None or self._search.seed != scene.seed:
            grid = self.grid(scene)
            self._search = _Search(
                scene.seed,
                np.zeros(grid.shape, dtype=bool),
                OccupancyGrid.from_scene(scene, resolution=grid.resolution, inflation=0.0),
                turn_left=2 * math.pi - 2 * self.half_fov,
            )
        return self._search

    def _look(self, s: _Search, target: NavObject, pose: Pose2D) -> None:
        """Mark what the camera sees from ``pose``; note the named object if it is in sight."""
        if s.last_yaw is not None:
            s.turn_left = max(0.0, s.turn_left - abs(wrap(pose[2] - s.last_yaw)))
        s.last_yaw = pose[2]
        s.swept |= view_mask(s.opaque, pose, self.half_fov, self.view_range)
        if not s.found:
            dist = math.hypot(target.x - pose[0], target.y - pose[1])
            s.found = dist <= self.view_range and in_sight(s.opaque, pose, target, self.half_fov) == "in view"

    # ------------------------------------------------------------------ the three behaviours
    def _turn(self, pose: Pose2D, angle: float) -> FloatArray:
        """Turn counter-clockwise on the spot by ``angle`` at TURN_RATE, then hold."""
        horizon, dt = self._embodiment.horizon, self._embodiment.dt
        steps = np.minimum(TURN_RATE * dt * np.arange(1, horizon + 1), angle)
        world = np.column_stack([np.full(horizon, pose[0]), np.full(horizon, pose[1]), pose[2] + steps])
        return self._within_limits(relative(pose, world))

    def _explore(self, scene: NavScene, s: _Search, pose: Pose2D) -> FloatArray | None:
        """The shortest path (N, 2) to the nearest unswept free area, or None if none is left."""
        grid = self.grid(scene)
        dist, previous = geodesic_from(grid, pose[0], pose[1])
        if s.goal is None or s.swept[s.goal] or not np.isfinite(dist[s.goal]):
            s.goal = _nearest_frontier(grid, s.swept, dist)
        if s.goal is None:
            return None
        return _path_to(grid, previous, s.goal, pose)


def view_mask(opaque: OccupancyGrid, pose: Pose2D, half_fov: float, view_range: float) -> BoolArray:
    """Cells of ``opaque``'s grid the camera at ``pose`` sees: a fan of rays, each stopped by the first
    wall or object cell it meets."""
    res = opaque.resolution
    angles = pose[2] + np.linspace(-half_fov, half_fov, RAYS)
    r = np.arange(0.0, view_range, res / 2)
    px = pose[0] + np.cos(angles)[:, None] * r[None, :]
    py = pose[1] + np.sin(angles)[:, None] * r[None, :]
    ny, nx = opaque.shape
    j = np.floor((px - opaque.origin[0]) / res).astype(int)
    i = np.floor((py - opaque.origin[1]) / res).astype(int)
    inside = (i >= 0) & (i < ny) & (j >= 0) & (j < nx)
    clear = inside & opaque.free[np.clip(i, 0, ny - 1), np.clip(j, 0, nx - 1)]
    # A ray sees up to its first blocked sample (the robot's own cell counts as clear).
    clear[:, 0] = True
    visible = np.cumprod(clear, axis=1).astype(bool)
    mask = np.zeros((ny, nx), dtype=bool)
    mask[i[visible], j[visible]] = True
    return mask


def _nearest_frontier(grid: OccupancyGrid, swept: BoolArray, dist: FloatArray) -> tuple[int, int] | None:
    """The reachable unswept cell nearest by path, among unswept areas of at least MIN_FRONTIER_M2."""
    import cv2

    unswept = grid.free & ~swept & np.isfinite(dist)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(unswept.astype(np.uint8), connectivity=8)
    big = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] * grid.resolution**2 >= MIN_FRONTIER_M2)
    big = big[big != 0]  # label 0 is the background (swept or blocked)
    if len(big) == 0:
        return None
    candidates = np.isin(labels, big)
    k = int(np.argmin(np.where(candidates, dist, np.inf)))
    return (k // grid.shape[1], k % grid.shape[1])


def _path_to(
    grid: OccupancyGrid, previous: npt.NDArray[np.int32], goal: tuple[int, int], pose: Pose2D
) -> FloatArray:
    """The path from ``pose`` to ``goal`` along Dijkstra's predecessors, string-pulled."""
    nx = grid.shape[1]
    k = goal[0] * nx + goal[1]
    cells = []
    while k >= 0:  # the source's predecessor is negative
        cells.append(grid.centre(k // nx, k % nx))
        k = int(previous[k])
    return np.asarray(string_pull(grid, [(pose[0], pose[1]), *reversed(cells)]), dtype=np.float64)
