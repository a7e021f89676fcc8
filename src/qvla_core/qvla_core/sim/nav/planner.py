"""Grid planning on a scene's map: occupancy, inflation, shortest paths, path smoothing.

:class:`OccupancyGrid` rasterises walls and objects at ``resolution`` and inflates them by the
robot's radius plus a margin (a cell is free when the robot's centre may be there). Shortest paths
come from :class:`DistanceField`: Dijkstra's algorithm run backwards from a goal region (the free
cells within a radius of an object) once, which gives the geodesic distance to the goal from every
cell; a path from any start follows the field downhill. That is A* with a zero heuristic, computed
once per goal, so each re-plan during an episode costs only a walk down the field. The same field
gives the shortest-path length that SPL needs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from qvla_core.sim.nav.scene import BASE_RADIUS, NavObject, NavScene

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

_SQRT2 = math.sqrt(2.0)
_STEPS = (
    (1, 0, 1.0),
    (-1, 0, 1.0),
    (0, 1, 1.0),
    (0, -1, 1.0),
    (1, 1, _SQRT2),
    (1, -1, _SQRT2),
    (-1, 1, _SQRT2),
    (-1, -1, _SQRT2),
)


@dataclass
class OccupancyGrid:
    """Free space for the robot's centre: True where it may be. Cell (i, j) is row i (y), column j (x)."""

    free: BoolArray
    origin: tuple[float, float]  # world position of cell (0, 0)'s lower-left corner
    resolution: float
    _fields: dict[tuple[float, float, float], DistanceField] = field(default_factory=dict, repr=False)
    _graph: object | None = field(default=None, repr=False)  # the free cells' 8-connected graph (scipy)

    @classmethod
    def from_scene(
        cls, scene: NavScene, resolution: float = 0.05, inflation: float = BASE_RADIUS
    ) -> OccupancyGrid:
        """Walls and objects of ``scene`` grown by ``inflation`` [m] (the robot's radius, plus a margin)."""
        b = scene.bounds
        nx = math.ceil((b.xmax - b.xmin) / resolution)
        ny = math.ceil((b.ymax - b.ymin) / resolution)
        xc = b.xmin + (np.arange(nx) + 0.5) * resolution
        yc = b.ymin + (np.arange(ny) + 0.5) * resolution
        gx, gy = np.meshgrid(xc, yc)
        free = np.ones((ny, nx), dtype=bool)
        for w in scene.walls:
            dx = np.maximum(np.maximum(w.xmin - gx, 0.0), gx - w.xmax)
            dy = np.maximum(np.maximum(w.ymin - gy, 0.0), gy - w.ymax)
            free &= np.hypot(dx, dy) > inflation
        for o in scene.objects:
            free &= np.hypot(gx - o.x, gy - o.y) > o.radius + inflation
        # Outside the outer walls is not a place to be either.
        inside = (gx > b.xmin + 0.1) & (gx < b.xmax - 0.1) & (gy > b.ymin + 0.1) & (gy < b.ymax - 0.1)
        return cls(free & inside, (b.xmin, b.ymin), resolution)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.free.shape[0]), int(self.free.shape[1]))

    def cell(self, x: float, y: float) -> tuple[int, int]:
        """(row, column) of a world point, clamped into the grid."""
        j = math.floor((x - self.origin[0]) / self.resolution)
        i = math.floor((y - self.origin[1]) / self.resolution)
        return (min(max(i, 0), self.shape[0] - 1), min(max(j, 0), self.shape[1] - 1))

    def centre(self, i: int, j: int) -> tuple[float, float]:
        return (self.origin[0] + (j + 0.5) * self.resolution, self.origin[1] + (i + 0.5) * self.resolution)

    def is_free(self, x: float, y: float) -> bool:
        return bool(self.free[self.cell(x, y)])

    def line_free(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """True when the straight segment a-b stays in free cells (sampled at half a cell)."""
        n = max(2, int(math.hypot(b[0] - a[0], b[1] - a[1]) / (0.5 * self.resolution)) + 1)
        s = np.linspace(0.0, 1.0, n)
        j = np.floor((a[0] + s * (b[0] - a[0]) - self.origin[0]) / self.resolution).astype(int)
        i = np.floor((a[1] + s * (b[1] - a[1]) - self.origin[1]) / self.resolution).astype(int)
        ny, nx = self.shape
        if np.any((i < 0) | (i >= ny) | (j < 0) | (j >= nx)):
            return False
        return bool(np.all(self.free[i, j]))

    def all_reachable(self, scene: NavScene, radius: float) -> bool:
        """True when a free cell within ``radius`` of every object connects to the start's cell."""
        import cv2

        _, labels = cv2.connectedComponents(self.free.astype(np.uint8), connectivity=8)
        i, j = self.cell(scene.start[0], scene.start[1])
        if not self.free[i, j]:
            return False
        mine = labels == labels[i, j]
        ny, nx = self.shape
        xs = self.origin[0] + (np.arange(nx) + 0.5) * self.resolution
        ys = self.origin[1] + (np.arange(ny) + 0.5) * self.resolution
        gx, gy = np.meshgrid(xs, ys)
        return all(bool(np.any(mine & (np.hypot(gx - o.x, gy - o.y) <= radius))) for o in scene.objects)

    def distance_to_object(self, obj: NavObject, radius: float) -> DistanceField:
        """Geodesic distance field to the free cells within ``radius`` of ``obj``'s centre (cached)."""
        key = (obj.x, obj.y, radius)
        if key not in self._fields:
            self._fields[key] = DistanceField.build(self, obj.x, obj.y, radius)
        return self._fields[key]


@dataclass
class DistanceField:
    """Geodesic distance [m] from every free cell to a goal region; inf where it cannot be reached."""

    grid: OccupancyGrid
    distance: FloatArray
    goal: tuple[float, float]

    @classmethod
    def build(cls, grid: OccupancyGrid, gx: float, gy: float, radius: float) -> DistanceField:
        """Dijkstra over the free cells (8-connected) from every free cell within ``radius`` of (gx, gy)."""
        ny, nx = grid.shape
        free = grid.free.ravel()
        xs = grid.origin[0] + (np.arange(nx) + 0.5) * grid.resolution
        ys = grid.origin[1] + (np.arange(ny) + 0.5) * grid.resolution
        near = (np.hypot(*np.meshgrid(xs - gx, ys - gy)) <= radius).ravel() & free
        dist = np.full(nx * ny, np.inf)
        heap: list[tuple[float, int]] = []
        for k in np.flatnonzero(near).tolist():
            dist[k] = 0.0
            heap.append((0.0, k))
        heapq.heapify(heap)
        d_list = dist.tolist()  # Python floats: much faster to index in the loop than numpy
        free_list = free.tolist()
        res = grid.resolution
        steps = [(di, dj, c * res) for di, dj, c in _STEPS]
        while heap:
            d, k = heapq.heappop(heap)
            if d > d_list[k]:
                continue
            i, j = divmod(k, nx)
            for di, dj, c in steps:
                ii, jj = i + di, j + dj
                if 0 <= ii < ny and 0 <= jj < nx:
                    n = ii * nx + jj
                    nd = d + c
                    if free_list[n] and nd < d_list[n]:
                        d_list[n] = nd
                        heapq.heappush(heap, (nd, n))
        return cls(grid, np.asarray(d_list, dtype=np.float64).reshape(ny, nx), (gx, gy))

    def at(self, x: float, y: float) -> float:
        """Geodesic distance from a world point (its cell) to the goal region [m]."""
        return float(self.distance[self.grid.cell(x, y)])

    def nearest_reachable(self, x: float, y: float) -> tuple[int, int] | None:
        """The reachable cell closest (straight line) to a point, e.g. when the robot grazes a wall."""
        finite = np.argwhere(np.isfinite(self.distance))
        if len(finite) == 0:
            return None
        g = self.grid
        centres = np.column_stack(
            [
                g.origin[0] + (finite[:, 1] + 0.5) * g.resolution,
                g.origin[1] + (finite[:, 0] + 0.5) * g.resolution,
            ]
        )
        best = int(np.argmin(np.hypot(centres[:, 0] - x, centres[:, 1] - y)))
        return (int(finite[best, 0]), int(finite[best, 1]))

    def path_from(self, x: float, y: float, smooth: bool = True) -> FloatArray | None:
        """Shortest path (N, 2) in world metres from (x, y) into the goal region; None if unreachable.

        The path starts at (x, y) itself. ``smooth`` removes the grid's staircase by keeping only the
        points that the previous kept point cannot see in a straight free line (string pulling).
        """
        g = self.grid
        start = g.cell(x, y)
        if not np.isfinite(self.distance[start]):
            near = self.nearest_reachable(x, y)
            if near is None:
                return None
            start = near
        cells = [start]
        i, j = start
        ny, nx = g.shape
        while self.distance[i, j] > 0.0:
            best, best_d = (i, j), self.distance[i, j]
            for di, dj, _ in _STEPS:
                ii, jj = i + di, j + dj
                if 0 <= ii < ny and 0 <= jj < nx and self.distance[ii, jj] < best_d:
                    best, best_d = (ii, jj), self.distance[ii, jj]
            if best == (i, j):
                break
            i, j = best
            cells.append(best)
        points = [(x, y)] + [g.centre(ci, cj) for ci, cj in cells]
        if smooth:
            points = string_pull(g, points)
        return np.asarray(points, dtype=np.float64)


def string_pull(grid: OccupancyGrid, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Keep only the points of a polyline that the previous kept point cannot reach in a free line."""
    if len(points) <= 2:
        return points
    out = [points[0]]
    anchor = 0
    k = 1
    while k < len(points) - 1:
        # Extend from the anchor as far as a straight free line reaches (checked against the next point).
        if grid.line_free(points[anchor], points[k + 1]):
            k += 1
            continue
        out.append(points[k])
        anchor = k
        k += 1
    out.append(points[-1])
    return out


def path_length(points: npt.ArrayLike) -> float:
    """Length of a polyline (N, >=2) [m]."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    return float(np.sum(np.hypot(*(np.diff(p[:, :2], axis=0).T))))


def geodesic_from(grid: OccupancyGrid, x: float, y: float) -> tuple[FloatArray, npt.NDArray[np.int32]]:
    """Path distance [m] from (x, y) to every cell (inf where unreachable), and Dijkstra's predecessor
    of every cell as a flat index (negative for the source and unreachable cells).

    One source per call, as an explorer needs at each re-plan: scipy's compiled Dijkstra over the
    free cells' graph (built once per grid) instead of :class:`DistanceField`'s Python loop, which
    is fine once per goal but too slow once a second (scipy comes with the sim: dm_control needs
    it). A start on an occupied cell (the base grazing a wall) starts from the nearest free one.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    ny, nx = grid.shape
    if grid._graph is None:
        free = grid.free
        rows: list[npt.NDArray[np.int64]] = []
        cols: list[npt.NDArray[np.int64]] = []
        costs: list[FloatArray] = []
        index = np.arange(ny * nx).reshape(ny, nx)
        for di, dj, c in _STEPS:
            # cells (i, j) whose neighbour (i + di, j + dj) is inside the grid, and those neighbours
            src = (slice(max(0, -di), ny - max(0, di)), slice(max(0, -dj), nx - max(0, dj)))
            dst = (slice(max(0, di), ny + min(0, di)), slice(max(0, dj), nx + min(0, dj)))
            linked = index[src][free[src] & free[dst]]
            rows.append(linked)
            cols.append(linked + di * nx + dj)
            costs.append(np.full(len(linked), c * grid.resolution))
        grid._graph = coo_matrix(
            (np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))), shape=(ny * nx, ny * nx)
        ).tocsr()
    i, j = grid.cell(x, y)
    if not grid.free[i, j]:
        cells = np.argwhere(grid.free)
        k = int(np.argmin(np.hypot(cells[:, 0] - i, cells[:, 1] - j)))
        i, j = int(cells[k, 0]), int(cells[k, 1])
    dist, previous = dijkstra(grid._graph, indices=i * nx + j, return_predecessors=True)
    return dist.reshape(ny, nx), previous.astype(np.int32)
