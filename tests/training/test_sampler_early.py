"""Oversampling the first frames of every episode (config ``data.early_frames`` / ``early_weight``)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from qvla_core.training.loop import early_oversampled
from qvla_core.training.sampler import StepSampler


class _Frames:
    """Two episodes of 10 frames, as a frame set reports them."""

    def frame_indices(self) -> np.ndarray:
        return np.array(list(range(10)) * 2, dtype=np.int64)

    def __len__(self) -> int:
        return 20


def test_early_frames_are_drawn_weight_times_per_epoch() -> None:
    row_map = early_oversampled(_Frames(), early_frames=3, weight=4)  # type: ignore[arg-type]
    assert row_map is not None and len(row_map) == 20 + 2 * 3 * 3
    sampler = StepSampler([20], batch_size=len(row_map), seed=0, start=0, stop=2, row_maps=[row_map])
    for batch in sampler:  # one epoch per batch
        counts = Counter(row for _, row in batch)
        assert all(counts[r] == (4 if r % 10 < 3 else 1) for r in range(20)), counts


def test_off_means_every_row_once() -> None:
    assert early_oversampled(_Frames(), early_frames=0, weight=4) is None  # type: ignore[arg-type]
    assert early_oversampled(_Frames(), early_frames=3, weight=1) is None  # type: ignore[arg-type]
    plain = [row for batch in StepSampler([20], 20, 0, 0, 1) for _, row in batch]
    assert sorted(plain) == list(range(20))
