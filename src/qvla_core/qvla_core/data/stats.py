"""Feature statistics in LeRobot's layout: ``min``, ``max``, ``mean``, ``std``, ``count`` and the
quantiles ``q01``, ``q10``, ``q50``, ``q90``, ``q99``, per channel.

* Vectors (state, action, the index columns): per-channel statistics of one episode's rows, exact
  (``numpy.quantile``). Episodes combine as LeRobot's ``aggregate_stats`` does: min of mins, max of
  maxes, count-weighted mean, the pooled variance, count-weighted quantiles.
* Images: per RGB channel over the pixels, scaled to 0..1 and shaped (3, 1, 1) as LeRobot writes
  them. Frames larger than 300 px are subsampled to ~150 px first (LeRobot's rule). Every frame
  goes into a 256-bin histogram per channel, so a camera's statistics are exact over all its frames
  and episodes merge exactly (LeRobot samples ~100 frames per episode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)

Stats = dict[str, npt.NDArray[Any]]


def vector_stats(values: npt.NDArray[Any]) -> Stats:
    """Statistics of (frames,) or (frames, channels) values, per channel (1-D results)."""
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"vector_stats needs (frames, channels) with frames > 0, got {array.shape}")
    wide = array.astype(np.float64)
    stats: Stats = {
        "min": array.min(axis=0),
        "max": array.max(axis=0),
        "mean": wide.mean(axis=0),
        "std": wide.std(axis=0),
        "count": np.array([array.shape[0]], dtype=np.int64),
    }
    for key, q in zip(QUANTILE_KEYS, np.quantile(wide, QUANTILES, axis=0), strict=True):
        stats[key] = q
    return stats


def aggregate(stats_list: Sequence[Mapping[str, npt.NDArray[Any]]]) -> Stats:
    """Combine per-episode statistics of one feature (LeRobot's ``aggregate_feature_stats``)."""
    if not stats_list:
        raise ValueError("aggregate needs at least one set of statistics")
    counts = np.array([int(s["count"][0]) for s in stats_list], dtype=np.float64)
    total = counts.sum()
    means = np.stack([np.asarray(s["mean"], dtype=np.float64) for s in stats_list])
    weights = counts.reshape(-1, *([1] * (means.ndim - 1)))
    mean = (means * weights).sum(axis=0) / total
    variances = np.stack([np.asarray(s["std"], dtype=np.float64) ** 2 for s in stats_list])
    variance = ((variances + (means - mean) ** 2) * weights).sum(axis=0) / total
    out: Stats = {
        "min": np.min(np.stack([s["min"] for s in stats_list]), axis=0),
        "max": np.max(np.stack([s["max"] for s in stats_list]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(total)], dtype=np.int64),
    }
    for key in QUANTILE_KEYS:
        values = np.stack([np.asarray(s[key], dtype=np.float64) for s in stats_list])
        out[key] = (values * weights).sum(axis=0) / total
    return out


def subsample(image: npt.NDArray[np.uint8], target: int = 150, threshold: int = 300) -> npt.NDArray[np.uint8]:
    """LeRobot's ``auto_downsample_height_width`` for an (H, W, 3) frame: every k-th pixel."""
    height, width = image.shape[:2]
    if max(height, width) < threshold:
        return image
    step = max(1, (width if width > height else height) // target)
    return image[::step, ::step]


class ImageStats:
    """Per-channel pixel histograms of one camera's frames."""

    def __init__(self) -> None:
        self.histogram = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def add(self, image: npt.NDArray[np.uint8]) -> None:
        small = subsample(image)
        for c in range(3):
            self.histogram[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self.frames += 1

    def merge(self, other: ImageStats) -> None:
        self.histogram += other.histogram
        self.frames += other.frames

    def stats(self) -> Stats:
        """LeRobot's image statistics: each (3, 1, 1) in 0..1; ``count`` is the number of frames."""
        if self.frames == 0:
            raise ValueError("no frames")
        levels = np.arange(256, dtype=np.float64)
        n = self.histogram.sum(axis=1).astype(np.float64)
        mean = (self.histogram * levels).sum(axis=1) / n
        var = (self.histogram * (levels[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
        cdf = np.cumsum(self.histogram, axis=1)
        present = self.histogram > 0
        out: Stats = {
            "min": present.argmax(axis=1).astype(np.float64),
            "max": (255 - present[:, ::-1].argmax(axis=1)).astype(np.float64),
            "mean": mean,
            "std": np.sqrt(var),
        }
        for key, q in zip(QUANTILE_KEYS, QUANTILES, strict=True):
            # The smallest level whose cumulative count reaches q of the pixels (inverted CDF).
            out[key] = np.array([np.searchsorted(cdf[c], q * n[c]) for c in range(3)], dtype=np.float64)
        result = {k: (v / 255.0).reshape(3, 1, 1) for k, v in out.items()}
        result["count"] = np.array([self.frames], dtype=np.int64)
        return result


def to_lists(stats: Mapping[str, Mapping[str, npt.NDArray[Any]]]) -> dict[str, dict[str, Any]]:
    """Statistics as JSON-ready nested lists (``meta/stats.json``)."""
    return {
        key: {name: np.asarray(value).tolist() for name, value in feature.items()}
        for key, feature in stats.items()
    }


def episode_columns(stats: Mapping[str, Mapping[str, npt.NDArray[Any]]]) -> dict[str, Any]:
    """Statistics as the ``stats/<feature>/<stat>`` columns of an episodes parquet row."""
    return {
        f"stats/{key}/{name}": np.asarray(value).tolist()
        for key, feature in stats.items()
        for name, value in feature.items()
    }
