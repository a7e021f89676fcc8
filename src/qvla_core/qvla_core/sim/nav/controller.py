"""A local controller for a differential-drive base: follow a path of poses under speed limits.

This is the part Nav2's controller server plays on a robot (a regulated pure-pursuit follower):
the policy's waypoints become a path; every control step :meth:`PathFollower.command` turns the
robot's pose into a body-frame velocity command (v forward, w counter-clockwise) that

* chases a lookahead point on the path (pure pursuit), turning in place first when the point is
  more than ``rotate_threshold`` off the heading (the base does not back up);
* slows down for curvature (``|w| <= max_yaw_rate``) and before the path's end, so that it can stop
  there within ``max_accel``;
* turns on the spot first where the path begins with poses on the robot's own spot (within
  ``xy_tolerance`` of where it starts): through their yaws in order, then it drives on;
* turns to the last pose's yaw once within ``xy_tolerance`` of it, then holds still (``done``); where
  the path ends in several poses on that spot, it turns through their yaws in order too.
  In order: a turn of more than half a circle (looking around) goes the way it was asked, not the
  short way to its last heading; and a policy's waypoint yaws are kept, not only its positions;
* never exceeds ``Limits`` in speed or acceleration (the latter against its own previous command).

Poses are (x, y, yaw) in one fixed frame (world or odom); helpers convert to and from a pose's own
frame (REP-103: x forward, y left, yaw counter-clockwise). Pure numpy.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Pose2D = tuple[float, float, float]


def wrap(angle: float) -> float:
    """An angle in [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def compose(frame: Pose2D, local: npt.ArrayLike) -> FloatArray:
    """Poses (N, 3) given in ``frame`` (e.g. base_link at some instant) -> the frame ``frame`` is in."""
    p = np.atleast_2d(np.asarray(local, dtype=np.float64))
    c, s = math.cos(frame[2]), math.sin(frame[2])
    out = np.empty_like(p)
    out[:, 0] = frame[0] + c * p[:, 0] - s * p[:, 1]
    out[:, 1] = frame[1] + s * p[:, 0] + c * p[:, 1]
    out[:, 2] = [wrap(frame[2] + a) for a in p[:, 2]]
    return out


def relative(frame: Pose2D, poses: npt.ArrayLike) -> FloatArray:
    """Poses (N, 3) in the frame ``frame`` is in -> expressed in ``frame`` (the inverse of compose)."""
    p = np.atleast_2d(np.asarray(poses, dtype=np.float64))
    c, s = math.cos(frame[2]), math.sin(frame[2])
    dx, dy = p[:, 0] - frame[0], p[:, 1] - frame[1]
    out = np.empty_like(p)
    out[:, 0] = c * dx + s * dy
    out[:, 1] = -s * dx + c * dy
    out[:, 2] = [wrap(a - frame[2]) for a in p[:, 2]]
    return out


@dataclass(frozen=True)
class Limits:
    """The base's velocity and acceleration limits (a small indoor robot)."""

    max_speed: float = 0.8  # m/s, forward
    max_yaw_rate: float = 1.5  # rad/s
    max_accel: float = 1.0  # m/s^2
    max_yaw_accel: float = 3.0  # rad/s^2

    def __post_init__(self) -> None:
        for name in ("max_speed", "max_yaw_rate", "max_accel", "max_yaw_accel"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)}")


class PathFollower:
    """Regulated pure pursuit with a final heading alignment. See the module docstring."""

    def __init__(
        self,
        limits: Limits | None = None,
        lookahead: float = 0.45,
        xy_tolerance: float = 0.15,
        yaw_tolerance: float = 0.15,
        rotate_threshold: float = 0.9,
    ) -> None:
        self.limits = limits or Limits()
        self.lookahead = lookahead
        self.xy_tolerance = xy_tolerance
        self.yaw_tolerance = yaw_tolerance
        self.rotate_threshold = rotate_threshold
        self._path: FloatArray | None = None
        self._seg = 0
        self._aligning = False
        self._yaws: list[float] = []  # headings still to turn through on the path's last spot
        self._first_yaws: list[float] = []  # ... on its first spot, before driving
        self.done = True
        self.last = (0.0, 0.0)  # previous command (v, w)

    def set_path(self, poses: npt.ArrayLike, start: Pose2D | None = None) -> None:
        """Follow ``poses`` (N, 3) from now on, replacing any previous path.

        ``start``: where the path begins (for waypoints in base_link, the pose at their instant); it
        is prepended so that the first leg is followed too. An empty path means stop.
        """
        p = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(p)):
            raise ValueError("path poses must be finite")
        if start is not None:
            p = np.vstack([np.asarray(start, dtype=np.float64).reshape(1, 3), p])
        if len(p) == 0:
            self.stop()
            return
        if len(p) == 1:
            p = np.vstack([p, p])
        self._path = p
        self._seg = 0
        self._aligning = False
        given = p[1:] if start is not None else p
        self._yaws = _yaws_on_spot(given[::-1], self.xy_tolerance)[::-1]
        self._first_yaws = _yaws_on_spot(given, self.xy_tolerance, centre=p[0])
        self.done = False

    def set_goal(self, goal: Pose2D, pose: Pose2D) -> None:
        """Drive to one pose (a goal_pose): a straight path from the current ``pose``."""
        self.set_path([goal], start=pose)

    def stop(self) -> None:
        """Drop the path: decelerate to a standstill."""
        self._path = None
        self.done = True

    def _progress(self, x: float, y: float) -> tuple[float, float]:
        """(arc length of the closest point, total length); the segment index only moves forward."""
        assert self._path is not None
        p = self._path[:, :2]
        seg_len = np.hypot(*(np.diff(p, axis=0).T))
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        best, best_s = math.inf, cum[self._seg]
        for k in range(self._seg, min(self._seg + 4, len(p) - 1)):
            a, d = p[k], p[k + 1] - p[k]
            n2 = float(d @ d)
            t = 0.0 if n2 < 1e-12 else min(max(float((np.array([x, y]) - a) @ d) / n2, 0.0), 1.0)
            dist = math.hypot(a[0] + t * d[0] - x, a[1] + t * d[1] - y)
            if dist < best - 1e-9:
                best, best_s, seg = dist, cum[k] + t * seg_len[k], k
                self._seg = seg
        return float(best_s), float(cum[-1])

    def _point_at(self, s: float) -> tuple[float, float]:
        assert self._path is not None
        p = self._path[:, :2]
        seg_len = np.hypot(*(np.diff(p, axis=0).T))
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        k = int(np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(p) - 2))
        t = 0.0 if seg_len[k] < 1e-12 else min(max((s - cum[k]) / seg_len[k], 0.0), 1.0)
        return (float(p[k, 0] + t * (p[k + 1, 0] - p[k, 0])), float(p[k, 1] + t * (p[k + 1, 1] - p[k, 1])))

    def command(self, pose: Pose2D, dt: float) -> tuple[float, float]:
        """The (v, w) command for the next ``dt`` seconds from the robot's ``pose``."""
        v, w = self._desired(pose)
        lim = self.limits
        v0, w0 = self.last
        v = min(max(v, v0 - lim.max_accel * dt, 0.0), v0 + lim.max_accel * dt, lim.max_speed)
        w = min(
            max(w, w0 - lim.max_yaw_accel * dt, -lim.max_yaw_rate),
            w0 + lim.max_yaw_accel * dt,
            lim.max_yaw_rate,
        )
        self.last = (v, w)
        return v, w

    def _still_to_turn(self, headings: list[float], yaw: float) -> float:
        """The signed turn [rad] from ``yaw`` through ``headings`` in order (each leg less than half a
        turn); the headings already passed are dropped from the list."""
        while len(headings) > 1 and abs(wrap(headings[0] - yaw)) < self.yaw_tolerance:
            headings.pop(0)
        legs = [wrap(b - a) for a, b in itertools.pairwise(headings)]
        return wrap(headings[0] - yaw) + float(sum(legs))

    def _turn(self, err: float) -> tuple[float, float]:
        """Turn on the spot by ``err`` [rad]: proportional, capped so that it can stop there
        (w^2 <= 2 a |err|, at half the yaw acceleration limit)."""
        lim = self.limits
        w_stop = math.sqrt(2.0 * lim.max_yaw_accel * 0.5 * abs(err))
        return 0.0, math.copysign(min(2.0 * abs(err), w_stop, lim.max_yaw_rate), err)

    def _desired(self, pose: Pose2D) -> tuple[float, float]:
        lim = self.limits
        if self._path is None or self.done:
            return 0.0, 0.0
        x, y, yaw = pose
        end = self._path[-1]
        d_end = math.hypot(end[0] - x, end[1] - y)
        s, total = self._progress(x, y)
        if not self._aligning and d_end < self.xy_tolerance and total - s < 2.0 * self.xy_tolerance + 0.05:
            self._aligning = True
        if self._first_yaws and not self._aligning:
            err = self._still_to_turn(self._first_yaws, yaw)
            if abs(err) >= self.yaw_tolerance:
                return self._turn(err)
            self._first_yaws = []
        if self._aligning:
            err = self._still_to_turn(self._yaws or [float(end[2])], yaw)
            if abs(err) < self.yaw_tolerance:
                self.done = True
                return 0.0, 0.0
            return self._turn(err)
        tx, ty = self._point_at(min(s + self.lookahead, total))
        if total - s < self.lookahead:
            tx, ty = float(end[0]), float(end[1])
        dx, dy = tx - x, ty - y
        c, sn = math.cos(yaw), math.sin(yaw)
        bx, by = c * dx + sn * dy, -sn * dx + c * dy
        dist = math.hypot(bx, by)
        alpha = math.atan2(by, bx)
        if abs(alpha) > self.rotate_threshold:
            return self._turn(alpha)
        remaining = max(total - s, d_end)
        v = min(lim.max_speed, math.sqrt(2.0 * lim.max_accel * 0.7 * remaining))
        curvature = 2.0 * math.sin(alpha) / max(dist, 1e-3)
        if abs(curvature) > 1e-6:
            v = min(v, lim.max_yaw_rate / abs(curvature))
        v = max(v, 0.05)
        return v, curvature * v


def _yaws_on_spot(poses: FloatArray, tolerance: float, centre: npt.ArrayLike | None = None) -> list[float]:
    """The yaws of the leading ``poses`` within ``tolerance`` of ``centre`` (default: the first
    pose's position), in order, without repeats. Reversed poses give the trailing ones. A step of
    more than a quarter turn between consecutive poses ends the list: no base turns that fast
    between waypoints, so it is not a turn on the spot but a corner of the path (pursuit's job)."""
    if len(poses) == 0:
        return []
    c = np.asarray(poses[0] if centre is None else centre, dtype=np.float64)
    yaws: list[float] = []
    for x, y, a in poses.tolist():
        if math.hypot(x - c[0], y - c[1]) >= tolerance:
            break
        if yaws and abs(wrap(a - yaws[-1])) > math.pi / 2:
            break
        if not yaws or abs(wrap(a - yaws[-1])) > 1e-3:
            yaws.append(a)
    return yaws
