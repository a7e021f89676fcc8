"""Seeded random indoor scenes for the navigation sim: rooms, corridors, objects, an instruction.

A scene is a grid of cells (``rows x cols``); every cell is a room 3-5 m across, except that one row
or column may be a corridor 1.6-2 m wide whose cells are open to each other. Neighbouring rooms are
joined by 1.0-1.2 m doorways along a random spanning tree (so every room is reachable) plus a few
extra doors (loops); each room beside a corridor opens onto it. Walls are axis-aligned boxes.

Objects: 4-6 of them, each a distinct (colour, shape) pair from :data:`COLOURS` x :data:`SHAPES`,
placed in rooms away from walls and from each other, so that none blocks a doorway. One is the
target; the instruction names it ("go to the blue box"). The robot starts at a free spot facing a
random direction, at least 3 m from the target.

Frames: the world frame is REP-103 (x, y on the floor, z up, yaw counter-clockwise from +x).
Everything here is pure numpy; the same seed always gives the same scene.
"""

from __future__ import annotations

import math

import numpy as np

from qvla_core.sim.nav.planner import OccupancyGrid
from qvla_core.sim.nav.scene import COLOURS, SHAPE_RADIUS, SHAPES, WALL_THICKNESS, NavObject, NavScene, Rect

ROOM_SIZES = (3.0, 3.5, 4.0, 4.5, 5.0)
CORRIDOR_WIDTH = (1.6, 2.0)
DOOR_WIDTH = (1.0, 1.2)
OBJECT_WALL_CLEARANCE = 0.8  # object surface to wall face [m]: doorways and passages stay open
OBJECT_SPACING = 1.8  # between object centres [m]
START_CLEARANCE = 0.5  # robot centre to wall face [m]
START_OBJECT_DISTANCE = 1.0  # robot centre to any object centre [m]
START_TARGET_DISTANCE = 3.0  # robot centre to the target's centre, straight line [m]


def _walls_along(
    fixed: float, lo: float, hi: float, doors: list[tuple[float, float]], vertical: bool
) -> list[Rect]:
    """Wall segments on the line ``x = fixed`` (vertical) or ``y = fixed`` from lo to hi, minus doors."""
    t = WALL_THICKNESS / 2.0
    out: list[Rect] = []
    cursor = lo
    for a, b in [*sorted(doors), (hi, hi)]:
        if a - cursor > 1e-6:
            out.append(
                Rect(fixed - t, cursor, fixed + t, a) if vertical else Rect(cursor, fixed - t, a, fixed + t)
            )
        cursor = max(cursor, b)
    return out


def _layout(rng: np.random.Generator) -> tuple[list[float], list[float], str | None, int]:
    """Column edges, row edges, the corridor's orientation ("row"/"col"/None) and index."""
    rows, cols = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    widths = [float(rng.choice(ROOM_SIZES)) for _ in range(cols)]
    heights = [float(rng.choice(ROOM_SIZES)) for _ in range(rows)]
    corridor: str | None = None
    index = -1
    if rng.random() < 0.6:
        corridor = "row" if rng.random() < 0.5 else "col"
        index = int(rng.integers(0, rows if corridor == "row" else cols))
        width = float(rng.uniform(*CORRIDOR_WIDTH))
        (heights if corridor == "row" else widths)[index] = width
    xs = [0.0, *np.cumsum(widths).tolist()]
    ys = [0.0, *np.cumsum(heights).tolist()]
    return xs, ys, corridor, index


def _connections(
    rng: np.random.Generator, rows: int, cols: int, corridor: str | None, index: int
) -> tuple[set[frozenset[tuple[int, int]]], set[frozenset[tuple[int, int]]]]:
    """(pairs of cells joined by a door, pairs with no wall between them)."""
    in_corridor = {
        (r, c)
        for r in range(rows)
        for c in range(cols)
        if (corridor == "row" and r == index) or (corridor == "col" and c == index)
    }
    pairs = [((r, c), (r, c + 1)) for r in range(rows) for c in range(cols - 1)]
    pairs += [((r, c), (r + 1, c)) for r in range(rows - 1) for c in range(cols)]
    open_pairs = {frozenset(p) for p in pairs if p[0] in in_corridor and p[1] in in_corridor}
    doors = {frozenset(p) for p in pairs if (p[0] in in_corridor) != (p[1] in in_corridor)}
    # Random spanning tree (randomised Kruskal) over the cells, counting corridor links as joined.
    parent = {(r, c): (r, c) for r in range(rows) for c in range(cols)}

    def find(a: tuple[int, int]) -> tuple[int, int]:
        while parent[a] != a:
            a = parent[a]
        return a

    for p in list(open_pairs) + list(doors):
        a, b = tuple(p)
        parent[find(a)] = find(b)
    for i in rng.permutation(len(pairs)):
        a, b = pairs[int(i)]
        key = frozenset((a, b))
        if key in open_pairs or key in doors:
            continue
        if find(a) != find(b):
            parent[find(a)] = find(b)
            doors.add(key)
        elif rng.random() < 0.25:
            doors.add(key)
    return doors, open_pairs


def _build_walls(
    rng: np.random.Generator,
    xs: list[float],
    ys: list[float],
    doors: set[frozenset[tuple[int, int]]],
    open_pairs: set[frozenset[tuple[int, int]]],
) -> list[Rect]:
    rows, cols = len(ys) - 1, len(xs) - 1
    t = WALL_THICKNESS / 2.0
    walls = [
        Rect(xs[0] - t, ys[0] - t, xs[-1] + t, ys[0] + t),
        Rect(xs[0] - t, ys[-1] - t, xs[-1] + t, ys[-1] + t),
        Rect(xs[0] - t, ys[0] + t, xs[0] + t, ys[-1] - t),
        Rect(xs[-1] - t, ys[0] + t, xs[-1] + t, ys[-1] - t),
    ]

    def door(lo: float, hi: float) -> tuple[float, float]:
        width = float(rng.uniform(*DOOR_WIDTH))
        centre = float(rng.uniform(lo + 0.3 + width / 2, hi - 0.3 - width / 2))
        return (centre - width / 2, centre + width / 2)

    for c in range(1, cols):  # vertical walls at x = xs[c], one segment per row
        for r in range(rows):
            key = frozenset(((r, c - 1), (r, c)))
            if key in open_pairs:
                continue
            gaps = [door(ys[r], ys[r + 1])] if key in doors else []
            walls += _walls_along(xs[c], ys[r] + t, ys[r + 1] - t, gaps, vertical=True)
    for r in range(1, rows):  # horizontal walls at y = ys[r]
        for c in range(cols):
            key = frozenset(((r - 1, c), (r, c)))
            if key in open_pairs:
                continue
            gaps = [door(xs[c], xs[c + 1])] if key in doors else []
            walls += _walls_along(ys[r], xs[c] + t, xs[c + 1] - t, gaps, vertical=False)
    return walls


def generate_scene(seed: int, max_tries: int = 200) -> NavScene:
    """The scene of ``seed`` (deterministic). Raises RuntimeError if no valid layout is found."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"scene seed must be a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        scene = _try_scene(seed, rng)
        if scene is not None:
            return scene
    raise RuntimeError(f"seed {seed}: no valid navigation scene in {max_tries} tries")


def _try_scene(seed: int, rng: np.random.Generator) -> NavScene | None:
    xs, ys, corridor, index = _layout(rng)
    doors, open_pairs = _connections(rng, len(ys) - 1, len(xs) - 1, corridor, index)
    walls = tuple(_build_walls(rng, xs, ys, doors, open_pairs))
    bounds = Rect(
        xs[0] - WALL_THICKNESS, ys[0] - WALL_THICKNESS, xs[-1] + WALL_THICKNESS, ys[-1] + WALL_THICKNESS
    )

    def wall_distance(x: float, y: float) -> float:
        return min(w.distance(x, y) for w in walls)

    kinds = [(c, s) for c in COLOURS for s in SHAPES]
    order = rng.permutation(len(kinds))[: int(rng.integers(4, 7))]
    objects: list[NavObject] = []
    for k in order:
        colour, shape = kinds[int(k)]
        need = SHAPE_RADIUS[shape] + OBJECT_WALL_CLEARANCE
        for _ in range(200):
            x, y = float(rng.uniform(xs[0], xs[-1])), float(rng.uniform(ys[0], ys[-1]))
            if wall_distance(x, y) < need:
                continue
            if any(math.hypot(x - o.x, y - o.y) < OBJECT_SPACING for o in objects):
                continue
            objects.append(NavObject(colour, shape, x, y, float(rng.uniform(-math.pi, math.pi))))
            break
    if len(objects) < 3:
        return None
    target = int(rng.integers(0, len(objects)))
    goal = objects[target]
    for _ in range(500):
        x, y = float(rng.uniform(xs[0], xs[-1])), float(rng.uniform(ys[0], ys[-1]))
        if wall_distance(x, y) < START_CLEARANCE:
            continue
        if any(math.hypot(x - o.x, y - o.y) < START_OBJECT_DISTANCE + o.radius for o in objects):
            continue
        if math.hypot(x - goal.x, y - goal.y) < START_TARGET_DISTANCE:
            continue
        scene = NavScene(
            seed, walls, tuple(objects), target, (x, y, float(rng.uniform(-math.pi, math.pi))), bounds
        )
        # Every object must be reachable by the robot from its start (within 1 m: a success).
        if OccupancyGrid.from_scene(scene).all_reachable(scene, 1.0):
            return scene
        return None
    return None
