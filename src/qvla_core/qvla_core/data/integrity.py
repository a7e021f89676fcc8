"""Consistency checks of a dataset's metadata against its frames, run once when it is opened
(:class:`~qvla_core.data.dataset.LeRobotDataset`): where each episode's frames are in a shared video
file, and whether ``meta/stats.json`` describes the frames. Both cost a pass over small tables, not
a decode: a dataset that passes them gives the training loop the frames and statistics it says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from qvla_core.data.format import DatasetError
from qvla_core.data.tables import Episode

STAT_NAMES = ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99")
QUANTILE_ORDER = ("min", "q01", "q10", "q50", "q90", "q99", "max")
# Statistics written in float32 or aggregated per episode (LeRobot's aggregate_stats keeps min and
# max exact) still match the frames within this fraction of a channel's range.
STATS_TOLERANCE = 1e-3


def check_video_spans(
    key: str, files: Mapping[Path, Sequence[Episode]], fps: float, header_frames: Mapping[Path, int]
) -> None:
    """Each episode's frames of camera ``key`` (``round(from_timestamp * fps)`` on, ``length`` of
    them) lie in its video file and do not overlap another episode's: a shifted span would hand
    out a neighbour's frames without any error."""
    for path, episodes in files.items():
        spans = []
        for ep in episodes:
            span = ep.videos[key]
            where = f"{ep.source}: episode {ep.index}: videos/{key}"
            first, last = span.from_timestamp * fps, span.to_timestamp * fps
            if first < -0.5 or abs((last - first) - ep.length) > 1.0:
                raise DatasetError(
                    f"{where}: from_timestamp {span.from_timestamp:g} .. to_timestamp "
                    f"{span.to_timestamp:g} s is {last - first:.1f} frames at {fps:g} fps, but the episode "
                    f"has {ep.length}"
                )
            start = round(first)
            if start + ep.length > header_frames[path]:
                raise DatasetError(
                    f"{path}: has {header_frames[path]} frames, but episode {ep.index} needs frames up to "
                    f"{start + ep.length - 1} ({ep.length} data rows): the video is shorter than the data "
                    f"({where}/from_timestamp {span.from_timestamp:g} s)"
                )
            spans.append((start, ep))
        spans.sort(key=lambda item: item[0])
        for (start, ep), (next_start, other) in pairwise(spans):
            if start + ep.length > next_start:
                raise DatasetError(
                    f"{ep.source}: episodes {ep.index} and {other.index} overlap in {path} (frames {start}.."
                    f"{start + ep.length - 1} and {next_start}..): videos/{key}/from_timestamp or "
                    "to_timestamp is wrong"
                )


def _stat(path: Path, key: str, name: str, value: Any, width: int) -> npt.NDArray[np.float64]:
    where = f"{path}: {key}.{name}"
    if not isinstance(value, list) or len(value) != width:
        got = f"{len(value)} values" if isinstance(value, list) else repr(value)
        raise DatasetError(f"{where}: expected a list of {width} numbers (one per channel), got {got}")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        raise DatasetError(f"{where}: expected numbers, got {value!r}")
    array = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise DatasetError(f"{where}: not finite ({array[~np.isfinite(array)][0]})")
    return array


def checked_stats(
    path: Path, key: str, entry: Mapping[str, Any], values: npt.NDArray[np.float32], names: Sequence[str]
) -> dict[str, list[float]]:
    """The statistics of one feature from stats.json, checked: one finite number per channel, in
    order (min <= q01 <= ... <= q99 <= max), min and max those of the frames."""
    width = len(names)
    stats = {s: _stat(path, key, s, entry.get(s), width) for s in STAT_NAMES}
    redo = f"delete {path} to have them computed from the data"
    for lower, upper in pairwise(QUANTILE_ORDER):
        bad = np.flatnonzero(stats[lower] > stats[upper] + 1e-9)
        if len(bad):
            c = int(bad[0])
            raise DatasetError(
                f"{path}: {key}: channel {names[c]} has {lower} {stats[lower][c]:g} above {upper} "
                f"{stats[upper][c]:g}; {redo}"
            )
    if len(values):
        lo, hi = values.min(axis=0).astype(np.float64), values.max(axis=0).astype(np.float64)
        tolerance = STATS_TOLERANCE * np.maximum(hi - lo, 1e-3) + 1e-6
        for name, data in (("min", lo), ("max", hi)):
            off = np.flatnonzero(np.abs(stats[name] - data) > tolerance)
            if len(off):
                c = int(off[0])
                raise DatasetError(
                    f"{path}: {key}.{name}: channel {names[c]} is {stats[name][c]:g}, but the frames' "
                    f"{name} is {data[c]:g}: these statistics do not describe this dataset (written for "
                    f"other data, or edited); {redo}"
                )
    return {s: [float(v) for v in stats[s]] for s in STAT_NAMES}


def usable(entry: Any) -> TypeGuard[dict[str, Any]]:
    """A stats.json entry that claims the statistics (a mapping with the names): it is then checked;
    anything else is treated as absent (computed from the data, with a warning)."""
    return isinstance(entry, dict) and all(s in entry for s in STAT_NAMES)
