"""Last line before the robot: reject, rate-limit and clamp commanded positions; watch input ages.

:meth:`SafetyFilter.check` applies, in this order:

1. reject (SafetyError) any NaN/inf, and a measured state of the wrong size or non-finite;
2. continuity: the first point may not jump more than ``continuity_tolerance`` from the
   measured state, for action channels that are also state channels (same name; grippers
   excepted, see ``__init__``), on top of
   the ``max_velocity * first_step_s`` the robot may legitimately travel before it is due;
3. velocity: ``|a_k - a_{k-1}| <= max_velocity * dt``, starting from the measured state where
   the channel has one (the first step may take ``max_velocity * first_step_s`` when the
   first point is due later than one dt after the state was measured). Delta channels
   (joint_delta, ee_delta) are a motion per step already, so for them
   ``|a_k| <= max_velocity * dt`` instead;
4. position: clamp to ``[lower, upper]`` (grippers also to 0..1).

Clamping to an interval never increases the distance between two values, so step 4 keeps
the velocity limits of step 3 (relative to a measured state that lies within limits).
The result is always finite and within limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import ChannelKind, Embodiment
from qvla_core.errors import ObservationError, SafetyError
from qvla_core.robot_io import SafetySettings

F64 = npt.NDArray[np.float64]
_DELTA_KINDS = (ChannelKind.joint_delta, ChannelKind.ee_delta)
_WAYPOINT_KINDS = (ChannelKind.waypoint_x, ChannelKind.waypoint_y, ChannelKind.waypoint_yaw)


@dataclass(frozen=True)
class SafeCommand:
    """Positions (n, n_action) float64, safe to send, and which channels had to be clamped."""

    positions: F64
    velocity_clamped: tuple[str, ...]
    limit_clamped: tuple[str, ...]

    @property
    def clamped(self) -> tuple[str, ...]:
        """Every channel changed by the filter, in action order, once each."""
        both = set(self.velocity_clamped) | set(self.limit_clamped)
        return tuple(n for n in dict.fromkeys(self.velocity_clamped + self.limit_clamped) if n in both)


class SafetyFilter:
    """Checks and clamps commands for one embodiment."""

    def __init__(self, embodiment: Embodiment, settings: SafetySettings) -> None:
        self.names = embodiment.action_names
        self.settings = settings
        self.n_state = len(embodiment.state)
        acts = embodiment.action
        ranges = np.array([c.command_range() for c in acts], dtype=np.float64).reshape(len(acts), 2)
        self.lower, self.upper = ranges[:, 0], ranges[:, 1]
        self.max_velocity = np.array(
            [math.inf if c.max_velocity is None else c.max_velocity for c in acts], dtype=np.float64
        )
        self.is_delta = np.array([c.kind in _DELTA_KINDS for c in acts])
        limited = np.isfinite(self.max_velocity)
        self._rate_limited = ~self.is_delta & limited
        self._delta_cols = np.flatnonzero(self.is_delta & limited)
        self._rate_cols = np.flatnonzero(~self.is_delta & limited)
        state_index = {name: i for i, name in enumerate(embodiment.state_names)}
        # action column -> state column for same-named channels (absolute ones only). Grippers are
        # not compared with their measured opening: a position-controlled gripper that squeezes an
        # object holds a command well inside the measured opening on purpose (that is the grip
        # force), and pulling each new chunk's command back to the measured opening would loosen
        # the grip at every chunk. They stay bounded by their range and their per-step velocity.
        pairs = [
            (a, state_index[c.name])
            for a, c in enumerate(acts)
            if c.name in state_index and c.kind not in _DELTA_KINDS and c.kind != ChannelKind.gripper
        ]
        self.paired_action = np.array([a for a, _ in pairs], dtype=np.intp)
        self.paired_state = np.array([s for _, s in pairs], dtype=np.intp)
        self._embodiment = embodiment

    def check(
        self,
        positions: npt.ArrayLike,
        measured_state: npt.ArrayLike | None,
        dt: float,
        *,
        first_step_s: float | None = None,
    ) -> SafeCommand:
        """Validate and clamp ``positions`` (n, n_action); raises SafetyError when it must reject.

        ``first_step_s``: time from the measured state's stamp to the first point's due time
        (default ``dt``). A spliced trajectory starts a few steps after the state was measured
        while the previous plan keeps moving the robot; budgeting only one ``dt`` for that
        gap would clamp a fast-moving first point back towards a stale position (a jerk).
        """
        cmd = np.array(positions, dtype=np.float64)  # a copy: the caller's array is not touched
        n_act = len(self.names)
        if cmd.ndim != 2 or cmd.shape[0] < 1 or cmd.shape[1] != n_act:
            raise SafetyError(f"command shape {cmd.shape} is not (n >= 1, {n_act})")
        if not dt > 0 or not math.isfinite(dt):
            raise SafetyError(f"dt must be a positive number, got {dt}")
        bad = ~np.isfinite(cmd)
        if bad.any():
            row, col = (int(x) for x in np.argwhere(bad)[0])
            raise SafetyError(
                f"command has {int(bad.sum())} non-finite values (first: {self.names[col]} at point {row}: "
                f"{cmd[row, col]})"
            )
        if first_step_s is not None and not (math.isfinite(first_step_s) and first_step_s >= 0):
            raise SafetyError(f"first_step_s must be a finite number >= 0, got {first_step_s}")
        first = dt if first_step_s is None else max(first_step_s, dt)
        start = self._start_point(measured_state)
        has_start = ~np.isnan(start)
        if has_start.any():
            # The robot keeps moving (along the plan it executes) until the first point is due:
            # up to max_velocity * first of that is motion, not a jump (step 3 bounds it anyway).
            moved = np.where(self._rate_limited, self.max_velocity * first, 0.0)
            jump = np.abs(cmd[0] - start)
            too_far = np.flatnonzero(has_start & (jump - moved > self.settings.continuity_tolerance))
            if too_far.size:
                worst = int(too_far[np.argmax(jump[too_far] - moved[too_far])])
                raise SafetyError(
                    f"first command jumps {jump[worst]:.4f} from the measured {self.names[worst]} "
                    f"(tolerance {self.settings.continuity_tolerance}) beyond the {moved[worst]:.4f} "
                    f"its max_velocity allows in {first:.3f} s; "
                    f"channels over: {[self.names[i] for i in too_far]}"
                )
        velocity = self._limit_velocity(cmd, start, dt, first)
        limit = np.any((cmd < self.lower) | (cmd > self.upper), axis=0)
        np.clip(cmd, self.lower, self.upper, out=cmd)
        return SafeCommand(
            positions=cmd,
            velocity_clamped=tuple(n for n, hit in zip(self.names, velocity, strict=True) if hit),
            limit_clamped=tuple(n for n, hit in zip(self.names, limit, strict=True) if hit),
        )

    def off_plan(self, planned: npt.ArrayLike, measured_state: npt.ArrayLike) -> tuple[str, float] | None:
        """The channel (and distance) where the measured state is farther than ``continuity_tolerance``
        from what the plan commands at the state's stamp, or None. Servo lag stays well inside it
        (under 0.1 rad in the MuJoCo ALOHA at full speed); beyond it the robot was moved from outside
        (a reset, a push, a collision) and the plan no longer describes it. Grippers are not compared
        (a closed grip holds a command inside the measured opening)."""
        start = self._start_point(measured_state)
        error = np.abs(np.asarray(planned, dtype=np.float64) - start)
        error[np.isnan(error)] = 0.0
        worst = int(np.argmax(error))
        if error[worst] > self.settings.continuity_tolerance:
            return self.names[worst], float(error[worst])
        return None

    def _start_point(self, measured_state: npt.ArrayLike | None) -> F64:
        """Measured value per action channel, NaN where there is none."""
        start = np.full(len(self.names), np.nan)
        if measured_state is None:
            return start
        state = np.asarray(measured_state, dtype=np.float64)
        if state.shape != (self.n_state,):
            raise SafetyError(f"measured state shape {state.shape} is not ({self.n_state},)")
        if not np.isfinite(state).all():
            raise SafetyError(f"measured state is not finite: {state.tolist()}")
        start[self.paired_action] = state[self.paired_state]
        return start

    def _limit_velocity(self, cmd: F64, start: F64, dt: float, first: float) -> npt.NDArray[np.bool_]:
        """Clamp in place; returns which channels were changed."""
        hit = np.zeros(cmd.shape[1], dtype=bool)
        cols = self._delta_cols
        if cols.size:
            lim = self.max_velocity[cols] * dt
            sub = cmd[:, cols]
            hit[cols] = (np.abs(sub) > lim).any(axis=0)
            cmd[:, cols] = np.clip(sub, -lim, lim)
        cols = self._rate_cols
        if not cols.size:
            return hit
        vmax = self.max_velocity[cols]
        sub = cmd[:, cols]  # a copy (fancy index), written back once at the end
        seed = start[cols]
        prev = np.where(np.isnan(seed), sub[0], seed)
        # Fast path: nothing to do when no step is too large (the common case).
        first_ok = np.abs(sub[0] - prev) <= vmax * first + 1e-12
        rest_ok = np.abs(sub[1:] - sub[:-1]) <= vmax * dt + 1e-12
        if first_ok.all() and rest_ok.all():
            return hit
        before = sub.copy()
        lo = np.empty_like(prev)
        hi = np.empty_like(prev)
        last = prev
        for k in range(sub.shape[0]):
            step = vmax * (first if k == 0 else dt)
            np.subtract(last, step, out=lo)
            np.add(last, step, out=hi)
            row = sub[k]
            np.minimum(row, hi, out=row)
            np.maximum(row, lo, out=row)
            last = row
        cmd[:, cols] = sub
        hit[cols] |= (sub != before).any(axis=0)
        return hit

    def hold(self, measured_state: npt.ArrayLike) -> SafeCommand:
        """A one-point command that holds the measured state; see :func:`hold_command`."""
        return hold_command(self._embodiment, measured_state)


def hold_command(embodiment: Embodiment, measured_state: npt.ArrayLike) -> SafeCommand:
    """One point holding the robot where it is: each absolute action channel takes its
    same-named measured state (clamped into its command range, grippers also 0..1: a joint read a
    little past its limit is held at the limit, not beyond), delta and waypoint channels take 0
    (no motion from where the robot is).

    Raises SafetyError if the state is unusable or an absolute channel has no measured
    counterpart (there is no safe value to hold it at). For a joint_trajectory_controller
    an empty trajectory also means "hold", without needing the state at all.
    """
    state = np.asarray(measured_state, dtype=np.float64)
    if state.shape != (len(embodiment.state),) or not np.isfinite(state).all():
        raise SafetyError(
            f"cannot hold: measured state {state.tolist()} is not {len(embodiment.state)} finite values"
        )
    index = {name: i for i, name in enumerate(embodiment.state_names)}
    point = np.zeros(len(embodiment.action), dtype=np.float64)
    missing = []
    clamped = []
    for a, ch in enumerate(embodiment.action):
        if ch.kind in _DELTA_KINDS or ch.kind in _WAYPOINT_KINDS:
            continue
        if ch.name not in index:
            missing.append(ch.name)
            continue
        lo, hi = ch.command_range()
        value = state[index[ch.name]]
        point[a] = min(max(value, lo), hi)
        if point[a] != value:
            clamped.append(ch.name)
    if missing:
        raise SafetyError(f"cannot hold: action channels {missing} have no measured state")
    return SafeCommand(positions=point[None, :], velocity_clamped=(), limit_clamped=tuple(clamped))


class Watchdog:
    """Ages of inputs against per-input limits [s]; an input never fed is stale (age inf)."""

    def __init__(self, limits: dict[str, float]) -> None:
        for name, limit in limits.items():
            if not limit > 0:
                raise ValueError(f"watchdog limit for {name} must be > 0, got {limit}")
        self.limits = dict(limits)
        self._last: dict[str, float] = {}

    def feed(self, name: str, stamp: float) -> None:
        """Record that ``name`` delivered data stamped ``stamp``; older stamps do not roll it back."""
        if name not in self.limits:
            raise ObservationError(f"watchdog: unknown input {name} (inputs: {list(self.limits)})")
        if not math.isfinite(stamp):
            raise ObservationError(f"watchdog: {name}: stamp is not finite ({stamp})")
        self._last[name] = max(stamp, self._last.get(name, -math.inf))

    def stale(self, now: float) -> dict[str, float]:
        """Input -> age [s] for every input older than its limit or never seen (inf)."""
        out = {}
        for name, limit in self.limits.items():
            age = now - self._last.get(name, -math.inf)
            if age > limit:
                out[name] = age
        return out

    def next_expiry(self) -> float:
        """When the first input will be stale (its stamp + limit); -inf if one was never fed."""
        return min(
            (self._last.get(name, -math.inf) + limit for name, limit in self.limits.items()),
            default=math.inf,
        )

    def reset(self) -> None:
        self._last.clear()
