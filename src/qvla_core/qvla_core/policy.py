"""The one small interface every policy implements: ``infer(observation) -> ActionChunk``.

The Qwen-VLA model and the scripted expert both satisfy :class:`Policy`, so
the runtime (chunk scheduler, safety, ROS node) never knows which one runs.
Everything here is numpy in, numpy out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Embodiment

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Observation:
    """What the robot saw and felt at one instant.

    images: camera name -> uint8 RGB frames shaped (T, H, W, 3), oldest first,
        T = the camera's ``history.frames`` from the embodiment.
    state: float32 (n_state,) in the embodiment's state order and units.
    instruction: the task in words.
    stamp: robot-clock time of the newest sensor message used [s].
    action_prefix: optional float32 (k, n_action) actions that will be executed
        before this chunk's own actions take over; the policy reproduces them as
        the chunk's first k rows (inpainting, used by real-time chunking).
    prefix_weight: optional (k,) weights in [0, 1] for the prefix (1 = keep exactly).
    """

    images: dict[str, ImageArray]
    state: FloatArray
    instruction: str
    stamp: float
    action_prefix: FloatArray | None = None
    prefix_weight: FloatArray | None = None


@dataclass(frozen=True)
class ActionChunk:
    """A chunk of actions predicted from one observation.

    actions: float32 (horizon, n_action) in the embodiment's action order and units.
    channel_names: the column names of ``actions``.
    dt: seconds between rows.
    observation_stamp: ``Observation.stamp`` of the input [s].
    latency: seconds per stage (e.g. preprocess, backbone, denoise, postprocess, total).
    """

    actions: FloatArray
    channel_names: tuple[str, ...]
    dt: float
    observation_stamp: float
    latency: dict[str, float] = field(default_factory=dict)

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    @property
    def total_latency(self) -> float:
        return float(self.latency.get("total", sum(self.latency.values())))


@runtime_checkable
class Policy(Protocol):
    """A policy for one embodiment."""

    @property
    def embodiment(self) -> Embodiment: ...

    def infer(self, observation: Observation) -> ActionChunk:
        """Predict ``embodiment.horizon`` actions from one observation."""
        ...

    def reset(self) -> None:
        """Forget any per-episode state (history, previous chunk)."""
        ...
