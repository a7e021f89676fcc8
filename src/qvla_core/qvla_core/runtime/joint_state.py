"""Merge sensor_msgs/JointState messages (as plain lists) into the embodiment's state vector.

Each configured topic fills some state channels, by joint name (``ros.joint_states``).
Gripper channels listed in ``ros.gripper_raw_range`` arrive in hardware units and are
mapped to the normalised 0 (closed) .. 1 (open) the policy uses; :class:`GripperScaling`
does the inverse for commands. Normalised grippers are not clipped: a reading slightly
outside 0..1 is what the hardware reports, and the safety layer clamps commands anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.errors import ConfigError, ObservationError
from qvla_core.robot_io import RobotConfig

FloatArray = npt.NDArray[np.float32]


class GripperScaling:
    """Linear map between hardware gripper positions and the normalised 0..1 opening.

    ``ranges``: channel -> (hardware value at 0 = closed, hardware value at 1 = open).
    Channels without a range pass through unchanged (they are already in policy units).
    """

    def __init__(self, ranges: dict[str, tuple[float, float]]) -> None:
        for channel, (closed, opened) in ranges.items():
            if not (math.isfinite(closed) and math.isfinite(opened)) or closed == opened:
                raise ConfigError(
                    f"gripper_raw_range.{channel}: needs two different finite values, got {(closed, opened)}"
                )
        self._ranges = dict(ranges)

    def has(self, channel: str) -> bool:
        return channel in self._ranges

    def to_normalised(self, channel: str, raw: float) -> float:
        rng = self._ranges.get(channel)
        if rng is None:
            return raw
        closed, opened = rng
        return (raw - closed) / (opened - closed)

    def to_hardware(self, channel: str, value: float) -> float:
        rng = self._ranges.get(channel)
        if rng is None:
            return value
        closed, opened = rng
        return closed + value * (opened - closed)


@dataclass(frozen=True)
class _Source:
    topic: str
    joint_names: tuple[str, ...]
    state_index: npt.NDArray[np.intp]  # where each joint goes in the state vector
    scale: npt.NDArray[np.float64]  # normalised = (raw - offset) * scale; 1/0 for non-grippers
    offset: npt.NDArray[np.float64]


class JointStateMerger:
    """Keeps the newest position of every state channel, filled from one or more topics."""

    def __init__(self, config: RobotConfig) -> None:
        emb = config.embodiment
        self.state_names = emb.state_names
        self.max_state_age_s = config.ros.safety.max_state_age_s
        self.grippers = GripperScaling(config.ros.gripper_raw_range)
        index = {name: i for i, name in enumerate(self.state_names)}
        self._sources: dict[str, _Source] = {}
        for src in config.ros.joint_states:
            offset = np.zeros(len(src.channels))
            scale = np.ones(len(src.channels))
            for k, channel in enumerate(src.channels):
                rng = config.ros.gripper_raw_range.get(channel)
                if rng is not None:
                    offset[k] = rng[0]
                    scale[k] = 1.0 / (rng[1] - rng[0])  # nonzero: GripperScaling checked it
            self._sources[src.topic] = _Source(
                topic=src.topic,
                joint_names=tuple(src.joint_names),
                state_index=np.array([index[c] for c in src.channels], dtype=np.intp),
                scale=scale,
                offset=offset,
            )
        self._state = np.zeros(len(self.state_names), dtype=np.float64)
        self._stamps: dict[str, float] = {}

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(self._sources)

    def reset(self) -> None:
        self._state[:] = 0.0
        self._stamps.clear()

    def update(
        self,
        topic: str,
        names: Sequence[str],
        positions: Sequence[float] | npt.NDArray[np.floating],
        stamp: float,
    ) -> None:
        """Take one JointState message. Unmapped extra joints are ignored.

        Raises ObservationError (and keeps the previous values) for an unknown topic,
        names/positions of different lengths, a repeated or missing mapped joint, a
        non-finite position of a mapped joint, or a stamp older than the last one
        accepted on this topic.
        """
        src = self._sources.get(topic)
        if src is None:
            raise ObservationError(
                f"joint state from unknown topic {topic} (configured: {list(self._sources)})"
            )
        if len(names) != len(positions):
            raise ObservationError(
                f"{topic}: joint state has {len(names)} names but {len(positions)} positions"
            )
        if not math.isfinite(stamp):
            raise ObservationError(f"{topic}: joint state stamp is not finite ({stamp})")
        last = self._stamps.get(topic)
        if last is not None and stamp < last:
            raise ObservationError(
                f"{topic}: joint state stamp {stamp:.6f} is older than the last accepted "
                f"{last:.6f} (out of order)"
            )
        where = {name: i for i, name in enumerate(names)}
        if len(where) != len(names):
            repeated = sorted({n for n in names if list(names).count(n) > 1})
            raise ObservationError(f"{topic}: joint names repeat in the message: {repeated}")
        missing = [j for j in src.joint_names if j not in where]
        if missing:
            raise ObservationError(f"{topic}: joint state lacks joints {missing} (got {list(names)})")
        raw = np.asarray(positions, dtype=np.float64)[[where[j] for j in src.joint_names]]
        bad = ~np.isfinite(raw)
        if bad.any():
            shown = {src.joint_names[k]: float(raw[k]) for k in np.flatnonzero(bad)}
            raise ObservationError(f"{topic}: non-finite joint positions {shown}")
        self._state[src.state_index] = (raw - src.offset) * src.scale
        self._stamps[topic] = stamp

    def state(self, now: float, max_age_s: float | None = None) -> tuple[FloatArray, float]:
        """The state vector (float32, embodiment order) and the oldest stamp it was built from.

        Raises ObservationError if a topic has never arrived, or if the oldest part is older
        than ``max_age_s`` (default ``ros.safety.max_state_age_s``; pass ``math.inf`` to skip).
        With no state channels: an empty vector and ``now``.
        """
        never = [t for t in self._sources if t not in self._stamps]
        if never:
            raise ObservationError(f"no joint state received yet on {never}")
        if not self._sources:
            return np.zeros(0, dtype=np.float32), now
        oldest = min(self._stamps.values())
        limit = self.max_state_age_s if max_age_s is None else max_age_s
        if now - oldest > limit:
            stale = {t: round(now - s, 4) for t, s in self._stamps.items() if now - s > limit}
            raise ObservationError(f"joint state is stale (age in s, limit {limit}): {stale}")
        return self._state.astype(np.float32), oldest

    def to_hardware(self, channel: str, value: float) -> float:
        """Normalised gripper opening -> hardware position (identity for other channels)."""
        return self.grippers.to_hardware(channel, value)
