"""The navigation sim's world: walls, coloured objects, the target and the robot's start.

A :class:`NavScene` is plain data; :func:`qvla_core.sim.nav.generate.generate_scene` draws one from
a seed (rooms, corridors, objects, an instruction) and :func:`open_room` makes a hand-made one.

Frames: the world frame is REP-103 (x, y on the floor, z up, yaw counter-clockwise from +x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.65, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
}
SHAPES = ("box", "cylinder", "sphere")
# Footprint radius of each shape on the floor [m] (a box's is its half-diagonal).
SHAPE_RADIUS = {"box": 0.2 * math.sqrt(2.0), "cylinder": 0.2, "sphere": 0.22}

BASE_RADIUS = 0.22  # the robot's footprint radius [m]
WALL_THICKNESS = 0.1
WALL_HEIGHT = 1.2


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle on the floor (a wall's footprint) [m]."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @property
    def centre(self) -> tuple[float, float]:
        return (0.5 * (self.xmin + self.xmax), 0.5 * (self.ymin + self.ymax))

    @property
    def half_size(self) -> tuple[float, float]:
        return (0.5 * (self.xmax - self.xmin), 0.5 * (self.ymax - self.ymin))

    def distance(self, x: float, y: float) -> float:
        """Distance from a point to the rectangle (0 inside)."""
        dx = max(self.xmin - x, 0.0, x - self.xmax)
        dy = max(self.ymin - y, 0.0, y - self.ymax)
        return math.hypot(dx, dy)


@dataclass(frozen=True)
class NavObject:
    """An object standing on the floor, named by colour and shape."""

    colour: str
    shape: str
    x: float
    y: float
    yaw: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def radius(self) -> float:
        return SHAPE_RADIUS[self.shape]


@dataclass(frozen=True)
class NavScene:
    """One navigation episode's world: walls, objects, the target, the robot's start pose."""

    seed: int
    walls: tuple[Rect, ...]
    objects: tuple[NavObject, ...]
    target: int  # index into objects
    start: tuple[float, float, float]  # x, y, yaw in the world frame
    bounds: Rect  # the outer walls' outside

    @property
    def target_object(self) -> NavObject:
        return self.objects[self.target]

    @property
    def instruction(self) -> str:
        return f"go to the {self.target_object.name}"

    def find_object(self, instruction: str) -> NavObject | None:
        """The object an instruction names ("... blue box ..."), or None if it names none or several."""
        words = instruction.lower().replace(",", " ").replace(".", " ").split()
        hits = [
            o
            for o in self.objects
            if any(w == o.colour for w in words) and any(w.rstrip("s") == o.shape for w in words)
        ]
        return hits[0] if len(hits) == 1 else None

    def wall_distance(self, x: float, y: float) -> float:
        """Distance from a point to the nearest wall [m]."""
        return min(w.distance(x, y) for w in self.walls)


def open_room(
    width: float,
    height: float,
    objects: list[NavObject],
    start: tuple[float, float, float],
    target: int = 0,
    seed: int = -1,
) -> NavScene:
    """A hand-made scene: one empty ``width`` x ``height`` room (corner at the origin), for tests."""
    t = WALL_THICKNESS / 2.0
    walls = (
        Rect(-t, -t, width + t, t),
        Rect(-t, height - t, width + t, height + t),
        Rect(-t, t, t, height - t),
        Rect(width - t, t, width + t, height - t),
    )
    bounds = Rect(-WALL_THICKNESS, -WALL_THICKNESS, width + WALL_THICKNESS, height + WALL_THICKNESS)
    return NavScene(seed, walls, tuple(objects), target, start, bounds)
