"""Map the policy's action vector onto what each robot output expects.

A joint_trajectory_controller wants its own joints in its own order, in hardware
units; the policy speaks in embodiment channels (grippers normalised 0..1).
Waypoint outputs want (x, y, yaw) rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import ChannelKind, Embodiment
from qvla_core.robot_io import RobotConfig, TrajectoryOutput
from qvla_core.runtime.safety import hold_command

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ControllerMapping:
    """Columns of the action vector, in the controller's joint order, with the gripper unit map."""

    topic: str
    joint_names: tuple[str, ...]
    columns: npt.NDArray[np.intp]
    raw_offset: FloatArray  # hardware = value * raw_scale + raw_offset (identity for non-grippers)
    raw_scale: FloatArray

    def to_hardware(self, actions: npt.NDArray[np.floating]) -> FloatArray:
        """(n, A) policy actions -> (n, J) controller positions."""
        rows = np.asarray(actions, dtype=np.float64)[:, self.columns]
        return rows * self.raw_scale + self.raw_offset


def controller_mappings(config: RobotConfig) -> list[ControllerMapping]:
    emb = config.embodiment
    index = {name: i for i, name in enumerate(emb.action_names)}
    out = []
    for spec in config.ros.outputs:
        if not isinstance(spec, TrajectoryOutput):
            continue
        offset = np.zeros(len(spec.channels))
        scale = np.ones(len(spec.channels))
        for j, ch in enumerate(spec.channels):
            if ch in config.ros.gripper_raw_range:
                closed, opened = config.ros.gripper_raw_range[ch]
                offset[j], scale[j] = closed, opened - closed
        out.append(
            ControllerMapping(
                topic=spec.topic,
                joint_names=tuple(spec.joint_names),
                columns=np.array([index[ch] for ch in spec.channels], dtype=np.intp),
                raw_offset=offset,
                raw_scale=scale,
            )
        )
    return out


def waypoint_columns(emb: Embodiment) -> npt.NDArray[np.intp] | None:
    """Columns of x, y, yaw for a waypoint embodiment (yaw optional -> -1), else None."""
    kinds = {c.kind: i for i, c in enumerate(emb.action)}
    if ChannelKind.waypoint_x not in kinds or ChannelKind.waypoint_y not in kinds:
        return None
    return np.array(
        [
            kinds[ChannelKind.waypoint_x],
            kinds[ChannelKind.waypoint_y],
            kinds.get(ChannelKind.waypoint_yaw, -1),
        ],
        dtype=np.intp,
    )


def waypoints(actions: npt.NDArray[np.floating], columns: npt.NDArray[np.intp]) -> FloatArray:
    """(n, A) actions -> (n, 3) x, y, yaw; without a yaw channel, heading follows the path."""
    rows = np.asarray(actions, dtype=np.float64)
    xy = rows[:, columns[:2]]
    if columns[2] >= 0:
        yaw = rows[:, columns[2]]
    else:
        step = np.diff(np.vstack([np.zeros((1, 2)), xy]), axis=0)
        yaw = np.arctan2(step[:, 1], step[:, 0])
    return np.column_stack([xy, yaw])


def hold_action(emb: Embodiment, state: npt.NDArray[np.floating]) -> FloatArray:
    """The action that keeps the robot where it is (:func:`~qvla_core.runtime.safety.hold_command`,
    the one place that decides what a hold is), as one row."""
    held: FloatArray = hold_command(emb, state).positions[0]
    return held
