"""Navigation metrics as vision-and-language navigation papers report them (R2R / VLN-CE).

Per episode, from the base's trajectory:

* **success** (SR): the robot stopped within ``success_radius`` (1 m) of the named object's centre;
* **oracle success** (OSR): it came within that radius at some point, stopped there or not;
* **navigation error** (NE): straight-line distance from where it ended to the object's centre [m];
* **trajectory length** (TL): the length of the path it drove [m];
* **SPL**: success weighted by path length, ``S * l / max(p, l)``, with ``p`` the trajectory length
  and ``l`` the shortest path from the start into the success region (geodesic on the map inflated by
  the base's radius; Anderson et al., 2018);
* **collisions**: new contacts of the base with walls or objects.

:func:`summarize` averages them over episodes (rates as fractions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.sim.nav.controller import wrap
from qvla_core.sim.nav.planner import OccupancyGrid, path_length
from qvla_core.sim.nav.scene import BASE_RADIUS, NavObject, NavScene

SUCCESS_RADIUS = 1.0
HALF_FOV = math.radians(37.5)  # the sim camera's horizontal half field of view (env.CAMERA_FOVY at 4:3)


@dataclass(frozen=True)
class NavMetrics:
    success: bool
    oracle_success: bool
    navigation_error: float
    trajectory_length: float
    shortest_path: float
    spl: float
    collisions: int
    stopped: bool
    wrong_object: bool  # ended within the success radius of another object (and not the named one)


def shortest_path_length(scene: NavScene, success_radius: float = SUCCESS_RADIUS) -> float:
    """Geodesic distance from the start into the success region of the named object [m].

    Measured along the grid path after string pulling: the grid's own 8-neighbour distances run up
    to 8% longer than straight lines, which would inflate SPL.
    """
    grid = OccupancyGrid.from_scene(scene, inflation=BASE_RADIUS)
    x, y, _ = scene.start
    path = grid.distance_to_object(scene.target_object, success_radius).path_from(x, y)
    if path is None:
        name = scene.target_object.name
        raise ValueError(f"scene {scene.seed}: the {name} cannot be reached from the start")
    return path_length(path)


def episode_metrics(
    positions: npt.ArrayLike,
    goal: tuple[float, float],
    shortest_path: float,
    collisions: int = 0,
    stopped: bool = True,
    success_radius: float = SUCCESS_RADIUS,
    others: list[tuple[float, float]] | None = None,
) -> NavMetrics:
    """Metrics of one episode.

    Args:
        positions: (N, >=2) base positions over the episode, the start first and the end last.
        goal: the named object's centre.
        shortest_path: ``l`` of SPL [m] (see :func:`shortest_path_length`); must be > 0.
        collisions: collision count of the episode.
        stopped: whether the robot had come to rest when the episode ended (a success needs it).
        others: centres of the scene's other objects, for the wrong-object flag.
    """
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ValueError(f"positions must be (N, 2) with N >= 1, got shape {p.shape}")
    if not (shortest_path > 0.0 and math.isfinite(shortest_path)):
        raise ValueError(f"shortest_path must be a positive finite length, got {shortest_path}")
    dist = np.hypot(p[:, 0] - goal[0], p[:, 1] - goal[1])
    ne = float(dist[-1])
    success = bool(stopped and ne <= success_radius)
    tl = path_length(p[:, :2])
    spl = shortest_path / max(tl, shortest_path) if success else 0.0
    end = p[-1]
    wrong = not success and any(
        math.hypot(end[0] - ox, end[1] - oy) <= success_radius for ox, oy in (others or [])
    )
    return NavMetrics(
        success=success,
        oracle_success=bool(np.min(dist) <= success_radius),
        navigation_error=ne,
        trajectory_length=tl,
        shortest_path=float(shortest_path),
        spl=float(spl),
        collisions=int(collisions),
        stopped=bool(stopped),
        wrong_object=bool(wrong),
    )


def summarize(episodes: list[NavMetrics]) -> dict[str, float]:
    """Means over episodes: SR, OSR, NE, TL, SPL, collisions per episode, wrong-object rate."""
    if not episodes:
        raise ValueError("summarize needs at least one episode")
    rows = [asdict(e) for e in episodes]

    def mean(key: str) -> float:
        return float(np.mean([float(r[key]) for r in rows]))

    return {
        "episodes": float(len(rows)),
        "SR": mean("success"),
        "OSR": mean("oracle_success"),
        "NE": mean("navigation_error"),
        "TL": mean("trajectory_length"),
        "SPL": mean("spl"),
        "collisions": mean("collisions"),
        "collision_free": float(np.mean([r["collisions"] == 0 for r in rows])),
        "wrong_object": mean("wrong_object"),
    }


TABLE_HEADER = (
    "| policy | SR | OSR | NE [m] | TL [m] | SPL | collisions/ep | collision-free | wrong object |",
    "|---|---|---|---|---|---|---|---|---|",
)
LEGEND = (
    "SR: stopped within 1 m of the named object's centre; OSR: came within 1 m at some point; NE: "
    "final distance to it; TL: path driven; SPL: SR weighted by shortest path / max(driven, "
    "shortest), the shortest being the any-angle path on the map inflated by the base's 0.22 m "
    "radius into the 1 m region; collisions: contacts with walls or objects (0.5 s apart); wrong "
    "object: ended within 1 m of another object instead (see qvla_core.sim.nav.metrics)."
)


def table_row(name: str, summary: dict[str, float]) -> str:
    """One row of the benchmarks' Markdown table (:data:`TABLE_HEADER`) from :func:`summarize`."""
    s = summary
    return (
        f"| {name} | {s['SR']:.0%} | {s['OSR']:.0%} | {s['NE']:.2f} | {s['TL']:.1f} | {s['SPL']:.2f} "
        f"| {s['collisions']:.2f} | {s['collision_free']:.0%} | {s['wrong_object']:.0%} |"
    )


def target_visibility(scene: NavScene, half_fov: float = HALF_FOV) -> str:
    """Where the named object is from the start, for splitting results: :func:`in_sight` from the
    scene's start pose over its walls and objects, not inflated."""
    return in_sight(
        OccupancyGrid.from_scene(scene, inflation=0.0), scene.start, scene.target_object, half_fov
    )


def in_sight(opaque: OccupancyGrid, pose: tuple[float, float, float], obj: NavObject, half_fov: float) -> str:
    """``"in view"`` (a clear line of sight from ``pose`` to the near surface of ``obj``, within the
    camera's horizontal field of view), ``"turn to see"`` (a clear line of sight outside it) or
    ``"hidden"`` (walls or other objects in the way). ``opaque``: the uninflated map."""
    x, y, yaw = pose
    d = math.hypot(obj.x - x, obj.y - y)
    if d <= obj.radius + 0.05:
        return "in view"
    ux, uy = (obj.x - x) / d, (obj.y - y) / d
    near = (obj.x - ux * (obj.radius + 0.05), obj.y - uy * (obj.radius + 0.05))
    if not opaque.line_free((x, y), near):
        return "hidden"
    bearing = wrap(math.atan2(obj.y - y, obj.x - x) - yaw)
    return "in view" if abs(bearing) <= half_fov else "turn to see"
