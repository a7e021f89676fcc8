"""Per-camera frame history: spacing, nearest frame per slot, padding, order and pruning."""

from __future__ import annotations

import numpy as np
import pytest

from qvla_core.embodiment import Camera, FrameHistory
from qvla_core.errors import ObservationError
from qvla_core.runtime.frame_history import CameraHistory


def cam(frames: int = 3, stride_s: float = 0.1) -> Camera:
    return Camera(name="cam_high", width=4, height=2, history=FrameHistory(frames=frames, stride_s=stride_s))


def frame(value: int) -> np.ndarray:
    return np.full((2, 4, 3), value, dtype=np.uint8)


def ids(stack: np.ndarray) -> list[int]:
    return [int(f[0, 0, 0]) for f in stack]


def test_slots_are_stride_apart_ending_at_newest() -> None:
    hist = CameraHistory(cam(frames=3, stride_s=0.1))
    for i in range(31):  # 30 Hz: frame i at i/30 s
        hist.push(frame(i), i / 30)
    out = hist.frames()
    assert out.shape == (3, 2, 4, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert ids(out) == [24, 27, 30]  # 0.8, 0.9, 1.0 s
    assert hist.frame_stamps() == pytest.approx((0.8, 0.9, 1.0))


def test_nearest_frame_per_slot_with_jittery_camera() -> None:
    hist = CameraHistory(cam(frames=3, stride_s=0.1))
    for i, t in enumerate([0.0, 0.07, 0.12, 0.18, 0.26]):
        hist.push(frame(i), t)
    # targets 0.06, 0.16, 0.26 -> nearest 0.07, 0.18, 0.26
    assert ids(hist.frames()) == [1, 3, 4]


def test_too_little_history_repeats_the_oldest() -> None:
    hist = CameraHistory(cam(frames=4, stride_s=0.1))
    hist.push(frame(5), 1.0)
    assert ids(hist.frames()) == [5, 5, 5, 5]
    hist.push(frame(6), 1.1)
    assert ids(hist.frames()) == [5, 5, 5, 6]


def test_window_can_end_before_the_newest_frame() -> None:
    hist = CameraHistory(cam(frames=2, stride_s=0.1))
    for i in range(10):
        hist.push(frame(i), i * 0.05)
    assert ids(hist.frames(end_stamp=0.31)) == [4, 6]  # ends at 0.30 (frame 6), slot 0.20
    with pytest.raises(ObservationError, match="no frame at or before"):
        hist.frames(end_stamp=-1.0)


def test_single_frame_history_and_duplicate_stamp() -> None:
    hist = CameraHistory(cam(frames=1, stride_s=0.0))
    hist.push(frame(1), 2.0)
    hist.push(frame(2), 2.0)  # same stamp again: replaces
    assert len(hist) == 1
    assert ids(hist.frames()) == [2]


def test_pruning_bounds_memory() -> None:
    hist = CameraHistory(cam(frames=3, stride_s=0.1), keep_extra_s=0.1)
    for i in range(1000):
        hist.push(frame(i % 256), i / 100)
    # span 0.2 s + 0.1 s extra at 100 Hz: 31 frames plus the one before the cutoff.
    assert len(hist) <= 33
    capped = CameraHistory(cam(frames=3, stride_s=1.0), max_frames=5)
    for i in range(100):
        capped.push(frame(i), i / 100)
    assert len(capped) == 5
    assert ids(capped.frames()) == [95, 95, 99]  # past the cap the oldest kept frame repeats


def test_bad_frames_are_rejected() -> None:
    hist = CameraHistory(cam())
    with pytest.raises(ObservationError, match="no frame received yet"):
        hist.frames()
    with pytest.raises(ObservationError, match=r"camera cam_high: expected 4x2"):
        hist.push(np.zeros((3, 4, 3), np.uint8), 0.0)
    with pytest.raises(ObservationError, match="not finite"):
        hist.push(frame(0), float("nan"))
    hist.push(frame(0), 1.0)
    with pytest.raises(ObservationError, match="out of order"):
        hist.push(frame(1), 0.5)
    assert ids(hist.frames()) == [0, 0, 0]
