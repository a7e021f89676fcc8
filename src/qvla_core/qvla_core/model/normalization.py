"""Per-embodiment normalisation of states and actions, strict by design.

Where the statistics come from, in order:

1. the checkpoint's ``norm_stats.json``, keyed by embodiment name;
2. the robot YAML's ``embodiment.normalization``.

Neither -> :class:`~qvla_core.errors.NormalizationError` naming both places.
There is no silent pass-through.

Modes (:class:`~qvla_core.embodiment.NormStats`):

* ``mean_std``: ``z = (x - mean) / std``;
* ``quantile``: ``z = 2 (x - q01) / (q99 - q01) - 1`` (q01 -> -1, q99 -> +1; not clipped).

Padded layout shared with the decoder: the embodiment's n channels occupy
columns ``0..n-1`` of the decoder's ``action_width`` (or ``state_width``) vector,
in the embodiment's channel order; columns ``n..`` are zero and masked
(excluded from the loss, dropped on output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qvla_core.embodiment import Embodiment, Normalization, NormStats
from qvla_core.errors import NormalizationError


class Normalizer:
    """Affine per-channel map ``z = (x - offset) * scale`` and its inverse."""

    def __init__(self, stats: NormStats, width: int, label: str) -> None:
        if stats.width() != width:
            raise NormalizationError(f"{label}: stats have {stats.width()} values for {width} channels")
        if stats.mode == "mean_std":
            assert stats.mean is not None and stats.std is not None
            offset = np.asarray(stats.mean, dtype=np.float64)
            scale = 1.0 / np.asarray(stats.std, dtype=np.float64)
        else:
            assert stats.q01 is not None and stats.q99 is not None
            lo = np.asarray(stats.q01, dtype=np.float64)
            hi = np.asarray(stats.q99, dtype=np.float64)
            # 2 (x - lo) / (hi - lo) - 1 = (x - (lo + hi) / 2) * 2 / (hi - lo)
            offset = (lo + hi) / 2.0
            scale = 2.0 / (hi - lo)
        self.label = label
        self.width = width
        self.mode = stats.mode
        self.offset = offset.astype(np.float32)
        self.scale = scale.astype(np.float32)
        self._cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def _tensors(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._cache:
            self._cache[device] = (
                torch.from_numpy(self.offset).to(device),
                torch.from_numpy(self.scale).to(device),
            )
        return self._cache[device]

    def normalize(self, x: Tensor) -> Tensor:
        """Robot units -> normalised (last dim = channels, fp32)."""
        offset, scale = self._tensors(x.device)
        return (x.to(torch.float32) - offset) * scale

    def unnormalize(self, z: Tensor) -> Tensor:
        """Normalised -> robot units (last dim = channels, fp32)."""
        offset, scale = self._tensors(z.device)
        return z.to(torch.float32) / scale + offset


class EmbodimentNormalizer:
    """State and action normalisers of one embodiment, plus where their stats came from."""

    def __init__(self, embodiment: Embodiment, stats: Normalization, source: str) -> None:
        self.source = source
        self.state = Normalizer(stats.state, len(embodiment.state), f"{source}: state")
        self.action = Normalizer(stats.action, len(embodiment.action), f"{source}: action")


def resolve_normalization(
    embodiment: Embodiment,
    checkpoint_stats: dict[str, Normalization] | None,
    checkpoint_file: str | Path = "norm_stats.json",
) -> EmbodimentNormalizer:
    """Stats from the checkpoint (by embodiment name), else from the robot YAML, else an error."""
    if checkpoint_stats is not None and embodiment.name in checkpoint_stats:
        return EmbodimentNormalizer(
            embodiment, checkpoint_stats[embodiment.name], f"{checkpoint_file}[{embodiment.name}]"
        )
    if embodiment.normalization is not None:
        return EmbodimentNormalizer(
            embodiment, embodiment.normalization, f"robot YAML embodiment.normalization ({embodiment.name})"
        )
    known = sorted(checkpoint_stats) if checkpoint_stats else []
    raise NormalizationError(
        f"no normalisation statistics for embodiment '{embodiment.name}': "
        f"{checkpoint_file} has none for it (it has {known or 'no embodiments'}) and the robot YAML "
        "has no embodiment.normalization; add one of the two (qvla-build-checkpoint --robot YAML "
        "--stats-from-limits derives placeholder stats from the channel limits)"
    )


def stats_from_limits(embodiment: Embodiment) -> Normalization:
    """Placeholder quantile stats mapping each channel's [lower, upper] to [-1, 1].

    For random-initialised checkpoints and demos only; a trained checkpoint
    carries the statistics of its training data.
    """

    def one(channels: list[Any]) -> NormStats:
        if not channels:
            return NormStats(mode="quantile", q01=[], q99=[])
        return NormStats(mode="quantile", q01=[c.lower for c in channels], q99=[c.upper for c in channels])

    return Normalization(state=one(list(embodiment.state)), action=one(list(embodiment.action)))
