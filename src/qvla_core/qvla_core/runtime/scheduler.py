"""Place action chunks on the robot clock and splice them into one committed plan.

Timing rule: row ``k`` of a chunk predicted from an observation stamped ``s`` is due at
``s + k * dt`` (the model predicts actions starting at the observation instant). When a
chunk arrives at ``now``, the rows due before ``now + lead_s`` are already history; the
first row sent is ``k0 = ceil((now + lead_s - s) / dt)``, due at ``start_stamp = s + k0*dt``,
and the others follow every ``dt`` (``time_from_start = k * dt`` from ``start_stamp``). This
matches a joint_trajectory_controller, which keeps executing the running trajectory until
the new one's start time and then follows the new one, interpolating linearly between
position-only points and holding the last point when a trajectory ends.

The committed plan is what the controller will do: the previous trajectories up to each
newer one's start, then the newest. :meth:`ChunkScheduler.current_target` samples it.

Modes:

* ``replace``: the new chunk's future rows replace the plan.
* ``temporal_ensemble``: each future row is the weighted mean of every recent chunk's
  prediction for that instant (linearly interpolated onto the new rows' times), weight
  ``exp(-ensemble_decay * age)`` with age 0 for the new chunk, 1 for the one before, ...
  (ACT weights the *oldest* highest; here newer predictions count more).
* ``rtc`` (real-time chunking, Black et al. 2025): before inference, :meth:`prefix` gives
  the plan sampled on the next chunk's row times, with weight 1 for the rows that will be
  history when the chunk arrives *and for the first row it will send* (``d`` rows), then
  ``c (e^c - 1)/(e - 1)`` with ``c = (k_end - i)/(k_end - d + 1)`` over the rest of the
  plan's coverage (``k_end`` rows); the policy inpaints them. Splice then continues from
  the first future row like ``replace``. Freezing that one extra row (the paper freezes
  only the executed ones and relies on guided sampling to continue smoothly) makes the
  switch exactly continuous when the chunk lands on time, also for post-hoc inpainting
  (:func:`apply_prefix`); a late chunk starts inside the soft zone and jumps a little.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from qvla_core.errors import SafetyError
from qvla_core.policy import ActionChunk

Mode = Literal["replace", "temporal_ensemble", "rtc"]
F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

_EPS = 1e-9  # stamps are floats; keep a row due exactly at now + lead


def _sample(start: float, dt: float, rows: F64, times: F64) -> F64:
    """Linear interpolation of rows due at start + k*dt, holding the first/last row outside."""
    n = rows.shape[0]
    if n == 1:
        return np.repeat(rows, times.shape[0], axis=0)
    u = np.clip((times - start) / dt, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.intp), n - 2)
    frac = (u - i0)[:, None]
    out: F64 = rows[i0] * (1.0 - frac) + rows[i0 + 1] * frac
    return out


@dataclass(frozen=True)
class ScheduledTrajectory:
    """What to send to a joint_trajectory_controller: point k at ``start_stamp + k*dt``."""

    start_stamp: float
    positions: F64  # (n, n_action), read-only: it is also the scheduler's committed plan
    dt: float
    observation_stamp: float
    first_row: int  # index in the chunk of positions[0]

    @property
    def end_stamp(self) -> float:
        return self.start_stamp + (int(self.positions.shape[0]) - 1) * self.dt

    def times(self) -> F64:
        return self.start_stamp + np.arange(self.positions.shape[0], dtype=np.float64) * self.dt

    def position_at(self, t: float) -> F64:
        """The controller's target at ``t`` if only this trajectory ran (hold outside it)."""
        out: F64 = _sample(self.start_stamp, self.dt, self.positions, np.array([t]))[0]
        return out


def boundary_jump(prev: ScheduledTrajectory, new: ScheduledTrajectory, t: float | None = None) -> float:
    """Largest per-channel difference between two trajectories at ``t`` (default: the new start),
    i.e. the step the robot's target takes when ``new`` takes over from ``prev``."""
    at = new.start_stamp if t is None else t
    return float(np.max(np.abs(prev.position_at(at) - new.position_at(at))))


def apply_prefix(actions: npt.NDArray[np.floating], prefix: F32, weight: F32) -> F32:
    """Post-hoc inpainting for policies that cannot guide their sampler: blend the first
    rows towards the prefix, ``w * prefix + (1 - w) * action``. Returns a new float32 array."""
    out = np.array(actions, dtype=np.float32)
    k = min(prefix.shape[0], out.shape[0])
    w = weight[:k, None].astype(np.float32)
    out[:k] = w * prefix[:k] + (1.0 - w) * out[:k]
    return out


def rtc_weights(k_end: int, d: int) -> F32:
    """Prefix weights over ``max(k_end, d)`` rows: 1 for the first ``d``, then the soft
    exponential decay of Black et al. (2025) until the plan's coverage ends at ``k_end``."""
    n = max(k_end, d)
    w = np.ones(n, dtype=np.float64)
    if k_end > d:
        i = np.arange(d, k_end, dtype=np.float64)
        c = (k_end - i) / (k_end - d + 1)
        w[d:k_end] = c * np.expm1(c) / (math.e - 1.0)
    return w.astype(np.float32)


class _Plan:
    """Committed trajectories: each runs from its start until the next one's start."""

    def __init__(self, dt: float) -> None:
        self.dt = dt
        self.starts: list[float] = []
        self.rows: list[F64] = []

    def __bool__(self) -> bool:
        return bool(self.starts)

    @property
    def end_stamp(self) -> float:
        return self.starts[-1] + (int(self.rows[-1].shape[0]) - 1) * self.dt

    def add(self, start: float, rows: F64) -> None:
        # The new trajectory replaces everything from its start on.
        keep = bisect.bisect_left(self.starts, start)
        del self.starts[keep:]
        del self.rows[keep:]
        self.starts.append(start)
        self.rows.append(rows)

    def prune(self, before: float) -> None:
        # A trajectory is dead once its successor started before `before`.
        drop = bisect.bisect_right(self.starts, before) - 1
        if drop > 0:
            del self.starts[:drop]
            del self.rows[:drop]

    def sample(self, times: F64) -> F64:
        seg = np.maximum(np.searchsorted(self.starts, times, side="right") - 1, 0)
        out = np.empty((times.shape[0], self.rows[0].shape[1]), dtype=np.float64)
        for j in np.unique(seg):
            mask = seg == j
            out[mask] = _sample(self.starts[j], self.dt, self.rows[j], times[mask])
        return out


class ChunkScheduler:
    """Turns action chunks into trajectories for the controller and tracks the committed plan."""

    def __init__(
        self,
        dt: float,
        horizon: int,
        n_action: int,
        mode: Mode = "rtc",
        ensemble_decay: float = 0.1,
        *,
        lead_s: float = 0.01,
    ) -> None:
        if not (dt > 0 and horizon >= 1 and n_action >= 1 and ensemble_decay >= 0 and lead_s >= 0):
            raise ValueError(
                f"need dt > 0, horizon >= 1, n_action >= 1, ensemble_decay >= 0, lead_s >= 0; got "
                f"{dt}, {horizon}, {n_action}, {ensemble_decay}, {lead_s}"
            )
        if mode not in ("replace", "temporal_ensemble", "rtc"):
            raise ValueError(f"unknown chunking mode {mode!r}")
        self.dt = dt
        self.horizon = horizon
        self.n_action = n_action
        self.mode: Mode = mode
        self.ensemble_decay = ensemble_decay
        self.lead_s = lead_s
        # Plan history kept for prefixes, whose rows start at an observation stamp in the past.
        self.keep_s = max(1.0, horizon * dt)
        self._plan = _Plan(dt)
        self._chunks: list[tuple[float, F64]] = []  # raw chunks for temporal_ensemble, oldest first
        self._last_observation: float | None = None

    def reset(self) -> None:
        """Forget the plan (new episode, or after a hold)."""
        self._plan = _Plan(self.dt)
        self._chunks.clear()
        self._last_observation = None

    def first_future_row(self, observation_stamp: float, t: float) -> int:
        """Index of the first row of a chunk from ``observation_stamp`` due at or after ``t + lead_s``."""
        return max(0, math.ceil((t + self.lead_s - observation_stamp) / self.dt - _EPS))

    def planned_start(self, observation_stamp: float, now: float) -> float:
        """When the first point of a chunk from ``observation_stamp`` spliced at ``now`` is due
        (e.g. for the safety filter's ``first_step_s = planned_start - state_stamp``)."""
        return observation_stamp + self.first_future_row(observation_stamp, now) * self.dt

    def splice(
        self,
        chunk: ActionChunk,
        now: float,
        safety: Callable[[F64], npt.NDArray[np.floating]] | None = None,
    ) -> ScheduledTrajectory | None:
        """Commit a new chunk and return the trajectory to send, or None when nothing is sent:
        the chunk is wholly in the past, or older than the last committed one.

        ``safety`` (e.g. ``lambda p: filter.check(p, state, dt).positions``) maps the positions
        before they are committed, so the plan is what the robot is really sent; if it raises,
        nothing is committed. Raises ValueError for a chunk of the wrong shape or dt and
        SafetyError for non-finite actions.
        """
        actions = chunk.actions
        if actions.ndim != 2 or actions.shape != (self.horizon, self.n_action):
            raise ValueError(
                f"chunk shape {actions.shape} does not match (horizon, n_action) = "
                f"({self.horizon}, {self.n_action})"
            )
        if abs(chunk.dt - self.dt) > 1e-6 * self.dt:
            raise ValueError(f"chunk dt {chunk.dt} differs from the scheduler's {self.dt}")
        if not np.isfinite(actions).all():
            raise SafetyError("action chunk contains NaN or inf; not scheduled")
        s = chunk.observation_stamp
        if self._last_observation is not None and s < self._last_observation:
            return None
        k0 = self.first_future_row(s, now)
        if k0 >= self.horizon:
            return None
        start = self.planned_start(s, now)
        rows = actions[k0:].astype(np.float64)
        if self.mode == "temporal_ensemble":
            rows = self._ensemble(rows, start, now)
        if safety is not None:
            rows = np.array(safety(rows), dtype=np.float64)  # our own copy: it is frozen below
            if rows.shape != (self.horizon - k0, self.n_action):
                raise ValueError(f"safety changed the trajectory shape to {rows.shape}")
        rows.flags.writeable = False  # shared by the plan and the caller: mutate a copy instead
        self._plan.add(start, rows)
        self._plan.prune(now - self.keep_s)
        if self.mode == "temporal_ensemble":
            self._chunks.append((s, actions.astype(np.float64)))
            # Bounded even when chunks come faster than they expire (one per row at most).
            del self._chunks[: -self.horizon]
        self._last_observation = s
        return ScheduledTrajectory(start, rows, self.dt, s, k0)

    def _ensemble(self, rows: F64, start: float, now: float) -> F64:
        end_of = (self.horizon - 1) * self.dt
        self._chunks = [(s, a) for s, a in self._chunks if s + end_of >= now]
        if not self._chunks:
            return rows
        times = start + np.arange(rows.shape[0], dtype=np.float64) * self.dt
        total = rows.copy()
        weight = np.ones(rows.shape[0])
        for age, (s, a) in enumerate(reversed(self._chunks), start=1):
            w = math.exp(-self.ensemble_decay * age)
            covered = (times >= s - _EPS) & (times <= s + end_of + _EPS)
            if covered.any():
                total[covered] += w * _sample(s, self.dt, a, times[covered])
                weight[covered] += w
        out: F64 = total / weight[:, None]
        return out

    def current_target(self, now: float) -> F64 | None:
        """What the controller is commanding at ``now`` per the committed plan (None: no plan).
        After the plan's end this is its last point, which the controller holds."""
        if not self._plan:
            return None
        out: F64 = self._plan.sample(np.array([now]))[0]
        return out

    @property
    def plan_end(self) -> float | None:
        """When the last committed point is due (None: no plan)."""
        return self._plan.end_stamp if self._plan else None

    def prefix(
        self, now: float, expected_delay: float, observation_stamp: float | None = None
    ) -> tuple[F32, F32]:
        """RTC prefix for the next chunk: the committed plan on that chunk's row times, and weights.

        The next chunk is predicted from ``observation_stamp`` (default ``now``) and expected at
        ``now + expected_delay``; its first ``first_future_row(obs, now + expected_delay)`` rows
        will be history by then and the next one is the first it will send. Those
        ``d = first_future_row(...) + 1`` rows get weight 1 (past the plan's end they hold its
        last point); rows up to the plan's end (``k_end``) get decaying soft weights. Returns
        float32 ``(k, n_action)`` and ``(k,)`` with ``k = min(horizon, max(d, k_end))``; empty
        when nothing is committed.
        """
        if not self._plan:
            return np.zeros((0, self.n_action), np.float32), np.zeros(0, np.float32)
        s = now if observation_stamp is None else observation_stamp
        k_end = math.floor((self._plan.end_stamp - s) / self.dt + _EPS) + 1
        k_end = min(max(k_end, 0), self.horizon)
        d = min(self.first_future_row(s, now + expected_delay) + 1, self.horizon)
        weight = rtc_weights(k_end, d)
        times = s + np.arange(weight.shape[0], dtype=np.float64) * self.dt
        return self._plan.sample(times).astype(np.float32), weight


class InferenceDelay:
    """How long inferences take, smoothed: the budget for how late the next chunk may arrive,
    like TCP's retransmission timeout (mean + 4 deviations). The RTC prefix covers the rows until
    then exactly, so a chunk that comes late still joins the plan smoothly."""

    def __init__(self) -> None:
        self.mean = self.deviation = 0.0
        self._seeded = False

    def update(self, seconds: float) -> None:
        if not self._seeded:
            self._seeded = True
            self.mean, self.deviation = seconds, seconds / 2
        else:
            self.deviation = 0.75 * self.deviation + 0.25 * abs(seconds - self.mean)
            self.mean = 0.875 * self.mean + 0.125 * seconds

    def budget(self) -> float:
        return self.mean + 4.0 * self.deviation
