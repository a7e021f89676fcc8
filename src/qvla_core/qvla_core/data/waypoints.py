"""Navigation labels: odometry poses -> waypoints in base_link, and one-step rows -> a frame's chunk.

A mobile base's dataset (``ros.recording.actions.source: odometry``) stores one action row per
frame: the base's pose at the next frame's instant expressed in base_link at this frame's instant
(x forward, y left, yaw counter-clockwise; REP-103). The ``horizon`` waypoints of frame ``k`` are those
rows composed, ``W_j = row_k * row_{k+1} * ... * row_{k+j}`` (SE(2)), which telescopes to the pose at
frame ``k + j + 1``'s instant in base_link at frame ``k``'s, exactly (no drift: every row is relative
to odometry poses of the same odom frame). Past the episode's end the base stays: the composition
takes the identity, so the remaining waypoints repeat the last pose.

Limits: a waypoint outside the embodiment's x/y limits (e.g. well behind the base after it turned
round) and every one after it repeat the last one inside, as :class:`~qvla_core.sim.nav.expert.NavExpert`
cuts its own plans: the base goes that far, and the next frame's waypoints take it on. Yaw is
wrapped to [-pi, pi) and clipped to its limits.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import ChannelKind, Embodiment
from qvla_core.errors import ObservationError

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]


def wrap(angle: npt.ArrayLike) -> F64:
    """Angles in [-pi, pi)."""
    return np.asarray((np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi)


def relative(origin: npt.ArrayLike, poses: npt.ArrayLike) -> F64:
    """Poses (N, 3) in a fixed frame (odom) -> expressed in the frame of ``origin`` (x, y, yaw)."""
    x0, y0, yaw0 = (float(v) for v in np.asarray(origin, dtype=np.float64))
    p = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    c, s = np.cos(yaw0), np.sin(yaw0)
    dx, dy = p[:, 0] - x0, p[:, 1] - y0
    return np.stack([c * dx + s * dy, -s * dx + c * dy, wrap(p[:, 2] - yaw0)], axis=1)


def compose(a: F64, b: F64) -> F64:
    """Row-wise SE(2) product ``a * b`` of poses (N, 3): ``b`` given in the frame of ``a``."""
    c, s = np.cos(a[:, 2]), np.sin(a[:, 2])
    return np.stack(
        [a[:, 0] + c * b[:, 0] - s * b[:, 1], a[:, 1] + s * b[:, 0] + c * b[:, 1], wrap(a[:, 2] + b[:, 2])],
        axis=1,
    )


def interpolate_pose(stamps: F64, poses: F64, t: float) -> F64:
    """The pose (3,) at ``t`` between the samples either side (yaw the short way round); the last
    sample after the end, the first before the start. ``stamps`` sorted ascending."""
    k = int(np.searchsorted(stamps, t, side="right"))
    if k == 0 or k == len(stamps):
        return np.array(poses[0 if k == 0 else -1], dtype=np.float64)
    t0, t1 = float(stamps[k - 1]), float(stamps[k])
    a, b = poses[k - 1], poses[k]
    f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
    yaw = float(wrap(a[2] + f * float(wrap(b[2] - a[2]))))
    return np.array([a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1]), yaw])


def yaw_of_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Rotation about z of a quaternion (the base's heading; roll and pitch ignored)."""
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


class OdometryTrack:
    """An episode's odometry poses (x, y, yaw in odom) by stamp, asked for the pose at any time."""

    def __init__(self, topic: str, max_age_s: float) -> None:
        self.topic, self.max_age_s = topic, max_age_s
        self._stamps: list[float] = []
        self._poses: list[tuple[float, float, float]] = []

    def add(self, stamp: float, pose: tuple[float, float, float]) -> None:
        k = bisect.bisect_right(self._stamps, stamp)
        if k and self._stamps[k - 1] == stamp:
            self._poses[k - 1] = pose  # a repeated stamp: the newer message
            return
        self._stamps.insert(k, stamp)
        self._poses.insert(k, pose)

    def pose_at(self, t: float) -> F64:
        """The pose at ``t``; ObservationError when the odometry before it is older than max_age_s."""
        k = bisect.bisect_right(self._stamps, t)
        age = t - self._stamps[k - 1] if k else math.inf
        if age > self.max_age_s:
            said = "no message yet" if k == 0 else f"the newest is {age:.3f} s old"
            raise ObservationError(
                f"stale input: {self.topic} at {t:.3f} s: {said} (limit ros.safety.max_state_age_s "
                f"{self.max_age_s} s)"
            )
        return self.pose_until(t)

    def pose_until(self, t: float) -> F64:
        """The pose at ``t`` (interpolated), or the last one known where the odometry ends before."""
        return interpolate_pose(np.asarray(self._stamps), np.asarray(self._poses), t)


class WaypointLayout:
    """Where x, y and yaw sit in an embodiment's action vector, and their limits."""

    def __init__(self, embodiment: Embodiment) -> None:
        kinds = [c.kind for c in embodiment.action]
        self.width = len(kinds)
        self.x = kinds.index(ChannelKind.waypoint_x)
        self.y = kinds.index(ChannelKind.waypoint_y)
        self.yaw = kinds.index(ChannelKind.waypoint_yaw) if ChannelKind.waypoint_yaw in kinds else None
        self.lower = np.array([c.lower for c in embodiment.action], dtype=np.float64)
        self.upper = np.array([c.upper for c in embodiment.action], dtype=np.float64)

    @staticmethod
    def applies(embodiment: Embodiment) -> bool:
        """An embodiment whose actions are waypoints (x and y, optionally yaw, nothing else)."""
        kinds = [c.kind for c in embodiment.action]
        waypoint = (ChannelKind.waypoint_x, ChannelKind.waypoint_y, ChannelKind.waypoint_yaw)
        return (
            all(k in waypoint for k in kinds)
            and kinds.count(ChannelKind.waypoint_x) == 1
            and kinds.count(ChannelKind.waypoint_y) == 1
            and kinds.count(ChannelKind.waypoint_yaw) <= 1
        )

    def to_row(self, pose: F64) -> F32:
        """(x, y, yaw) -> an action row in the embodiment's order."""
        row = np.zeros(self.width, dtype=np.float32)
        row[self.x], row[self.y] = pose[0], pose[1]
        if self.yaw is not None:
            row[self.yaw] = np.clip(pose[2], self.lower[self.yaw], self.upper[self.yaw])
        return row

    def to_poses(self, rows: npt.ArrayLike) -> F64:
        """Action rows (N, width) -> poses (N, 3) (yaw 0 where the embodiment has none)."""
        r = np.atleast_2d(np.asarray(rows, dtype=np.float64))
        yaw = r[:, self.yaw] if self.yaw is not None else np.zeros(len(r))
        return np.stack([r[:, self.x], r[:, self.y], yaw], axis=1)

    def limits_text(self) -> str:
        lo, hi = self.lower, self.upper
        return f"(x {lo[self.x]:g}..{hi[self.x]:g}, y {lo[self.y]:g}..{hi[self.y]:g})"

    def outside(self, pose: F64) -> bool:
        """x or y beyond the embodiment's limits."""
        return bool(
            not (self.lower[self.x] <= pose[0] <= self.upper[self.x])
            or not (self.lower[self.y] <= pose[1] <= self.upper[self.y])
        )

    def chunk(self, steps: npt.ArrayLike, horizon: int) -> F32:
        """The ``horizon`` waypoints (horizon, width) of the frame whose one-step row is ``steps[0]``
        (``steps``: that row and the rows after it in the episode; missing ones are the identity:
        the base stays). Within the limits as the module docstring says."""
        poses = self.to_poses(steps)[:horizon]
        if len(poses) < horizon:
            poses = np.vstack([poses, np.zeros((horizon - len(poses), 3))])
        out = np.empty((horizon, 3))
        acc = np.zeros((1, 3))
        for j in range(horizon):
            acc = compose(acc, poses[j : j + 1])
            out[j] = acc[0]
        inside = np.array([not self.outside(p) for p in out])
        if not inside.all():
            k = int(np.argmin(inside))
            out[k:] = out[k - 1] if k > 0 else (0.0, 0.0, out[0, 2])
        rows = np.stack([self.to_row(p) for p in out])
        return rows

    def chunks(self, episodes: Sequence[npt.ArrayLike], horizon: int) -> F32:
        """Every frame's waypoints of every episode, stacked (frames * horizon, width)."""
        out = []
        for steps in episodes:
            s = np.atleast_2d(np.asarray(steps))
            out += [self.chunk(s[k : k + horizon], horizon) for k in range(len(s))]
        return np.concatenate(out) if out else np.zeros((0, self.width), dtype=np.float32)

    def stats(self, episodes: Sequence[npt.ArrayLike], horizon: int) -> dict[str, list[float]]:
        """LeRobot-style statistics (min, max, mean, std, q01..q99) of every frame's waypoints: what
        the model is trained to emit, so what its action normalisation must cover."""
        values = self.chunks(episodes, horizon).astype(np.float64)
        q = np.quantile(values, [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
        computed = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0)}
        computed.update(zip(("q01", "q10", "q50", "q90", "q99"), q, strict=True))
        return {name: [float(v) for v in values_] for name, values_ in computed.items()}
