"""Normalisation statistics of a trained embodiment, from its dataset.

The checkpoint's ``norm_stats.json`` gets, per trained embodiment, ``quantile`` stats: each state
and action channel's 1st and 99th percentile over the dataset (LeRobot's ``stats.json`` keys
``q01``/``q99`` of ``observation.state`` and ``action``), which map to -1 and +1. They replace the
placeholder "stats from limits" a freshly built checkpoint carries.

A channel that never moves in the data (q99 == q01, e.g. the idle arm of a one-arm task) has no
range to map; it is widened to its value ± 1% of the channel's span in the robot YAML, so the
validator accepts it, the model sees 0 for it, and a small deviation at run time stays a small
input (a tiny range would blow it up). Each widened channel gets a log line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from qvla_core.data.sample import SampleSource
from qvla_core.embodiment import Channel, Embodiment, Normalization, NormStats
from qvla_core.errors import TrainingError
from qvla_core.logs import get_logger

log = get_logger("qvla.train")

WIDEN_FRACTION = 0.01  # of the channel's [lower, upper] span, each side
FLAT_FRACTION = 1e-6  # a range below this fraction of the span counts as "never moves"

FEATURES = (("state", "observation.state"), ("action", "action"))


def _quantiles(
    stats: dict[str, dict[str, list[float]]], feature: str, channels: Sequence[Channel], label: str
) -> tuple[list[float], list[float]]:
    entry = stats.get(feature)
    if not isinstance(entry, dict):
        raise TrainingError(f"{label}: stats have no '{feature}' entry (keys: {sorted(stats)})")
    out = []
    for key in ("q01", "q99"):
        values = entry.get(key)
        if not isinstance(values, list | tuple):
            raise TrainingError(f"{label}: stats '{feature}' have no '{key}' list (keys: {sorted(entry)})")
        if len(values) != len(channels):
            raise TrainingError(
                f"{label}: stats '{feature}.{key}' have {len(values)} values but the robot YAML has "
                f"{len(channels)} channels"
            )
        floats = [float(v) for v in values]
        bad = [c.name for c, v in zip(channels, floats, strict=True) if not math.isfinite(v)]
        if bad:
            raise TrainingError(f"{label}: stats '{feature}.{key}' are not finite for channels {bad}")
        out.append(floats)
    return out[0], out[1]


def _widen(
    lo: list[float], hi: list[float], channels: Sequence[Channel], what: str
) -> tuple[list[float], list[float]]:
    lo, hi = list(lo), list(hi)
    for i, c in enumerate(channels):
        span = c.upper - c.lower
        if hi[i] < lo[i]:
            raise TrainingError(f"{what} channel {c.name}: q99 {hi[i]} is below q01 {lo[i]}")
        if hi[i] - lo[i] <= FLAT_FRACTION * span:
            mid = 0.5 * (lo[i] + hi[i])
            half = WIDEN_FRACTION * span
            log.info(
                "norm stats: %s channel %s never moves in the data (q01 = q99 = %.6g); widened to "
                "[%.6g, %.6g] (±%g%% of its limits)",
                what,
                c.name,
                mid,
                mid - half,
                mid + half,
                100 * WIDEN_FRACTION,
            )
            lo[i], hi[i] = mid - half, mid + half
    return lo, hi


def norm_stats_from_source(source: SampleSource, embodiment: Embodiment, label: str) -> Normalization:
    """Quantile stats for ``embodiment`` from ``source.stats`` (constant channels widened)."""
    stats = source.stats
    if not isinstance(stats, dict):
        raise TrainingError(f"{label}: stats must be a mapping, got {type(stats).__name__}")
    parts = {}
    for name, feature in FEATURES:
        channels = list(getattr(embodiment, name))
        if not channels:
            parts[name] = NormStats(mode="quantile", q01=[], q99=[])
            continue
        lo, hi = _quantiles(stats, feature, channels, label)
        lo, hi = _widen(lo, hi, channels, f"{embodiment.name} {name}")
        parts[name] = NormStats(mode="quantile", q01=lo, q99=hi)
    return Normalization(state=parts["state"], action=parts["action"])
