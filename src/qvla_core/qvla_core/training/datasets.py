"""Datasets of a run: checked against their robot YAML, split into training and held-out episodes,
and turned into frame sets (:mod:`qvla_core.training.frames`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvla_core.data.sample import SampleSource
from qvla_core.embodiment import Embodiment
from qvla_core.errors import TrainingError
from qvla_core.logs import get_logger
from qvla_core.training.config import Data, Validation
from qvla_core.training.frames import CachedFrames, FrameSet, StreamFrames, build_cache, cache_key

log = get_logger("qvla.train")


@dataclass(frozen=True)
class DatasetSpec:
    """One ``--dataset`` with the robot YAML it was recorded for."""

    source: SampleSource
    embodiment: Embodiment
    label: str  # how messages name it (its directory)


def _names(items: Sequence[object]) -> list[str]:
    return [str(getattr(i, "name", i)) for i in items]


def check_source(spec: DatasetSpec) -> None:
    """The dataset's features match the robot YAML (names, widths, cameras, rate) and it has frames.

    The LeRobot reader checks the dataset files against the YAML it is given; this repeats the
    checks that matter for training on whatever source it gets, with messages naming the dataset.
    """
    src, e, label = spec.source, spec.embodiment, spec.label
    d = src.embodiment
    if d.name != e.name:
        raise TrainingError(f"{label}: embodiment {d.name!r} but the robot YAML is {e.name!r}")
    for key, got, want in (
        ("observation.state", _names(d.state), _names(e.state)),
        ("action", _names(d.action), _names(e.action)),
    ):
        if got != want:
            raise TrainingError(
                f"{label}: {key} has {len(got)} channels {got} but the robot YAML has {len(want)} {want}"
            )
    if _names(d.cameras) != _names(e.cameras):
        raise TrainingError(
            f"{label}: cameras {_names(d.cameras)} but the robot YAML has {_names(e.cameras)}"
        )
    if not math.isclose(float(src.fps), e.control_rate_hz, rel_tol=1e-6):
        raise TrainingError(
            f"{label}: fps {src.fps:g} but the robot YAML's control_rate_hz is {e.control_rate_hz:g} "
            "(record at the control rate, or fix control_rate_hz)"
        )
    if len(src) == 0 or not src.episodes:
        raise TrainingError(
            f"{label}: the dataset is empty ({len(src.episodes)} episodes, {len(src)} frames)"
        )


def split_episodes(
    episodes: Sequence[int], validation: Validation, seed: int, label: str
) -> tuple[list[int], list[int]]:
    """(training episodes, held-out episodes)."""
    eps = sorted(int(e) for e in episodes)
    held = validation.episodes
    if isinstance(held, int):
        if held == 0:
            return eps, []
        if held >= len(eps):
            raise TrainingError(
                f"{label}: validation.episodes = {held} but the dataset has only {len(eps)} episode(s); "
                "hold out fewer (validation.episodes: 0 turns validation off)"
            )
        rng = np.random.default_rng([seed, 3])
        val = sorted(int(e) for e in rng.choice(eps, size=held, replace=False))
    else:
        missing = sorted(set(held) - set(eps))
        if missing:
            raise TrainingError(
                f"{label}: validation.episodes {missing} are not in the dataset "
                f"(episodes {eps[0]}..{eps[-1]})"
            )
        val = sorted(held)
        if len(val) == len(eps):
            raise TrainingError(
                f"{label}: validation.episodes holds out every episode; keep some for training"
            )
    return [e for e in eps if e not in set(val)], val


def frame_set(
    source: SampleSource,
    spec: DatasetSpec,
    episodes: Sequence[int],
    size: tuple[int, int],
    data: Data,
    cache_root: Path,
    role: str,
    progress: bool,
) -> FrameSet:
    """The frames of ``episodes``: cached arrays (``data.frame_cache``) or read on demand."""
    label = f"{spec.label} ({role})"
    stream = StreamFrames(source, label, spec.embodiment, size)
    if not data.frame_cache:
        return stream
    key = cache_key(source, spec.embodiment, size, episodes)
    directory = cache_root / f"{spec.embodiment.name}-{role}-{key}"
    cached: CachedFrames = build_cache(stream, directory, key, workers=data.workers, progress=progress)
    return cached
