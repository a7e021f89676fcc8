"""What a dataset hands to training: one (observation, action chunk) pair per control tick.

This is the contract between the data room (:mod:`qvla_core.data`, which reads LeRobot v3.0
datasets) and the training room (:mod:`qvla_core.training`). The observation is exactly what the
policy node builds at inference (:class:`qvla_core.policy.Observation`: images at the robot YAML's
camera size, oldest frame first; the state in the YAML's channel order and units; the task text),
so training and inference share one preprocessing path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Embodiment
from qvla_core.policy import FloatArray, Observation

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class TrainingSample:
    """One training example.

    observation: what the policy sees at frame ``frame_index`` of episode ``episode_index``.
    actions: float32 (horizon, n_action), the actions due at this tick and the next horizon - 1
        ticks, in the embodiment's action order and units.
    action_is_pad: bool (horizon,), True for rows past the episode's last frame (those rows repeat
        the last action; the loss may mask them, as LeRobot's ``action_is_pad``).
    episode_index, frame_index: where the sample comes from (frame_index counts control ticks
        from the episode's start).
    embodiment: name of the embodiment the sample belongs to (several datasets of different robots
        can be trained together).
    """

    observation: Observation
    actions: FloatArray
    action_is_pad: BoolArray
    episode_index: int
    frame_index: int
    embodiment: str


class SampleSource(Protocol):
    """What the trainer needs from a dataset of one embodiment (the LeRobot v3.0 reader implements it;
    tests may implement it with synthetic data).

    ``stats``: per feature key (``observation.state``, ``action``) per-channel statistics as lists
    of floats, keys ``min``, ``max``, ``mean``, ``std``, ``q01``, ``q99`` (LeRobot's stats.json).
    ``fingerprint``: a short hash of the dataset's metadata and data files (recorded in checkpoints).
    """

    @property
    def embodiment(self) -> Embodiment: ...

    @property
    def fps(self) -> float: ...

    @property
    def episodes(self) -> tuple[int, ...]: ...

    @property
    def stats(self) -> dict[str, dict[str, list[float]]]: ...

    @property
    def fingerprint(self) -> str: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> TrainingSample: ...

    def select_episodes(self, episodes: Sequence[int]) -> SampleSource:
        """The same dataset restricted to ``episodes`` (e.g. held-out validation episodes)."""
        ...
