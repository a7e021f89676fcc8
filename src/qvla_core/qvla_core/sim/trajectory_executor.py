"""Execute joint trajectories the way ros2_control's joint_trajectory_controller (JTC) does.

Pure numpy, no ROS and no MuJoCo: the sim node feeds it the ``trajectory_msgs/JointTrajectory``
messages it receives (:meth:`TrajectoryExecutor.accept`) and asks it for the position command at
every control tick (:meth:`TrajectoryExecutor.target`).

Rules (position-only trajectories, i.e. JTC's linear "spline" interpolation):

* ``start_stamp == 0`` means "start now" (the time of :meth:`accept`); otherwise the trajectory's
  points are at ``start_stamp + time_from_start``.
* Joint names may come in any order; they are mapped by name. An unknown or repeated name, an empty
  trajectory, non-increasing ``time_from_start``, non-finite values or a shape mismatch reject the
  trajectory. So does a trajectory whose last point is already in the past. Partial goals (a subset
  of the joints) are rejected unless ``allow_partial_joints_goal`` (JTC's parameter of that name);
  when allowed, the missing joints hold the command they have when the trajectory starts.
* A trajectory takes effect at its start time ``ts = max(start_stamp, now)``. Until then the running
  trajectory (or hold) goes on: a new trajectory replaces the running one *from its start time*.
  Points whose time is before ``ts`` are dropped.
* From ``ts`` to the first remaining point the command is interpolated linearly from the command
  at ``ts`` to that point. (JTC interpolates from the state it has when the trajectory becomes
  active -- the current command in open-loop mode -- to the first point; it does not hold, and it
  does not jump unless the first point is at ``ts``.)
* Between points: linear interpolation. After the last point: hold the last point. With no
  trajectory: hold the initial (or last) command.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class TrajectoryExecutor:
    """Samples the position command of a set of joints from received trajectories.

    Args:
        joint_names: the controller's joints, in the order of :meth:`target`'s output.
        initial: the command held before any trajectory arrives, shape (len(joint_names),).
        allow_partial_joints_goal: accept trajectories naming only some joints (JTC default: False).
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        initial: npt.ArrayLike,
        allow_partial_joints_goal: bool = False,
    ) -> None:
        names = list(joint_names)
        if not names:
            raise ValueError("joint_names must not be empty")
        if len(set(names)) != len(names):
            raise ValueError(f"joint_names repeat: {names}")
        init = np.asarray(initial, dtype=np.float64).reshape(-1)
        if init.shape != (len(names),) or not np.all(np.isfinite(init)):
            raise ValueError(f"initial must be {len(names)} finite numbers, got shape {init.shape}")
        self.joint_names = tuple(names)
        self.allow_partial_joints_goal = allow_partial_joints_goal
        self._index = {n: i for i, n in enumerate(names)}
        # Knots of one piecewise-linear command: before the first knot the first value holds,
        # after the last the last value holds.
        self._times: FloatArray = np.zeros(1)
        self._points: FloatArray = init[None, :].copy()
        self._times[0] = -np.inf
        self.last_rejection: str | None = None

    # ------------------------------------------------------------------ queries
    def target(self, now: float) -> FloatArray:
        """The position command at time ``now`` (joint order of the constructor)."""
        times, points = self._times, self._points
        k = int(np.searchsorted(times, now, side="right"))
        if k == 0:
            return np.array(points[0], dtype=np.float64)
        if k >= len(times):
            return np.array(points[-1], dtype=np.float64)
        t0, t1 = times[k - 1], times[k]
        if not np.isfinite(t0) or t1 <= t0:
            return np.array(points[k - 1], dtype=np.float64)
        a = (now - t0) / (t1 - t0)
        return np.asarray(points[k - 1] + a * (points[k] - points[k - 1]), dtype=np.float64)

    def end_time(self) -> float:
        """Time of the last knot (-inf when nothing was ever accepted)."""
        return float(self._times[-1])

    def is_active(self, now: float) -> bool:
        """True while a trajectory is still moving (``now`` before its last point)."""
        return bool(now < self._times[-1])

    # ------------------------------------------------------------------ commands
    def hold(self, now: float) -> None:
        """Cancel any trajectory and hold the command at ``now`` (JTC on an empty trajectory)."""
        q = self.target(now)
        self._times = np.array([-np.inf])
        self._points = q[None, :]

    def accept(
        self,
        start_stamp: float,
        joint_names: Sequence[str],
        times_from_start: Sequence[float],
        positions: npt.ArrayLike,
        now: float,
    ) -> bool:
        """Take a new trajectory; False (and :attr:`last_rejection` says why) if it is rejected."""
        reason = self._validate(start_stamp, joint_names, times_from_start, positions, now)
        if reason is not None:
            self.last_rejection = reason
            return False
        self.last_rejection = None
        tfs = np.asarray(times_from_start, dtype=np.float64)
        pos = np.asarray(positions, dtype=np.float64).reshape(len(tfs), len(joint_names))
        start = now if start_stamp == 0.0 else float(start_stamp)
        ts = max(start, now)
        abs_times = start + tfs
        keep = abs_times >= ts
        abs_times, pos = abs_times[keep], pos[keep]

        q_ts = self.target(ts)
        cols = [self._index[n] for n in joint_names]
        new_points = np.repeat(q_ts[None, :], len(abs_times), axis=0)
        new_points[:, cols] = pos

        # Old knots strictly before ts survive (the running trajectory goes on until ts).
        old = self._times < ts
        times = [self._times[old], np.array([ts])]
        points = [self._points[old], q_ts[None, :]]
        if len(abs_times) and abs_times[0] == ts:  # first point at the start time: jump to it
            points[1] = new_points[:1]
            abs_times, new_points = abs_times[1:], new_points[1:]
        times.append(abs_times)
        points.append(new_points)
        self._times = np.concatenate(times)
        self._points = np.concatenate(points, axis=0)
        self._prune(now)
        return True

    # ------------------------------------------------------------------ internals
    def _prune(self, now: float) -> None:
        """Forget knots that can no longer matter (all but the last one at or before ``now``)."""
        k = int(np.searchsorted(self._times, now, side="right"))
        if k > 1:
            self._times = self._times[k - 1 :].copy()
            self._points = self._points[k - 1 :].copy()

    def _validate(
        self,
        start_stamp: float,
        joint_names: Sequence[str],
        times_from_start: Sequence[float],
        positions: npt.ArrayLike,
        now: float,
    ) -> str | None:
        names = list(joint_names)
        if not names:
            return "trajectory names no joints"
        unknown = [n for n in names if n not in self._index]
        if unknown:
            return f"unknown joints {unknown}; this controller has {list(self.joint_names)}"
        if len(set(names)) != len(names):
            return f"joint names repeat: {names}"
        if len(names) != len(self.joint_names) and not self.allow_partial_joints_goal:
            missing = [n for n in self.joint_names if n not in names]
            return f"partial goal (missing {missing}) and allow_partial_joints_goal is false"
        tfs = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
        if tfs.size == 0:
            return "trajectory has no points"
        if not np.all(np.isfinite(tfs)) or np.any(tfs < 0):
            return f"time_from_start must be finite and >= 0, got {tfs.tolist()}"
        if np.any(np.diff(tfs) <= 0):
            return "time_from_start must be strictly increasing"
        pos = np.asarray(positions, dtype=np.float64)
        if pos.size != tfs.size * len(names) or (pos.ndim == 2 and pos.shape != (tfs.size, len(names))):
            return f"positions must be shaped ({tfs.size}, {len(names)}), got {pos.shape}"
        if not np.all(np.isfinite(pos)):
            return "positions must be finite"
        if not np.isfinite(start_stamp) or start_stamp < 0:
            return f"start stamp must be finite and >= 0, got {start_stamp}"
        start = now if start_stamp == 0.0 else float(start_stamp)
        if start + tfs[-1] < now:
            return f"trajectory ends in the past ({start + tfs[-1]:.3f} s < now {now:.3f} s)"
        return None
