"""Per-camera frame history: the last few frames, spaced ``history.stride_s`` apart.

The policy sees ``history.frames`` frames per camera ending at the newest one. Slot
``i`` (0 = oldest) targets the time ``end - (frames - 1 - i) * stride_s`` and gets the
stored frame whose stamp is nearest to it (a tie goes to the newer frame). Until
enough history has arrived, early slots get the oldest frame we have: the nearest
frame to a time before the first frame *is* the first frame, so the window is simply
padded with repeats of the oldest frame.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import numpy.typing as npt

from qvla_core.embodiment import Camera
from qvla_core.errors import ObservationError
from qvla_core.runtime.images import check_size

ImageArray = npt.NDArray[np.uint8]


class CameraHistory:
    """Ring buffer of one camera's frames with their stamps [s, robot clock].

    Windows may end before the newest frame (the synchroniser can pick a slightly older
    set), so frames are kept for the window span plus ``keep_extra_s`` behind the newest
    one, plus one frame before that (it may still be the nearest to the oldest slot).
    At most ``max_frames`` are kept: a fast camera with a long history would otherwise
    hold hundreds of full frames; past the cap the oldest slots repeat the oldest frame.
    """

    def __init__(self, camera: Camera, max_frames: int = 128, keep_extra_s: float = 0.5) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        if not keep_extra_s >= 0.0:
            raise ValueError(f"keep_extra_s must be >= 0, got {keep_extra_s}")
        self.keep_extra_s = keep_extra_s
        self.camera = camera
        self.frames_per_window = camera.history.frames
        self.stride_s = camera.history.stride_s
        self.span_s = (self.frames_per_window - 1) * self.stride_s
        self.max_frames = max_frames
        self._stamps: list[float] = []
        self._images: list[ImageArray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def newest_stamp(self) -> float | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._images.clear()

    def push(self, image: ImageArray, stamp: float) -> None:
        """Add a decoded RGB frame. A frame with the newest stamp again replaces it.

        Raises ObservationError for a wrong size, a non-finite stamp or a stamp older
        than the newest frame (frames must arrive in order).
        """
        check_size(image, self.camera)
        if not math.isfinite(stamp):
            raise ObservationError(f"camera {self.camera.name}: frame stamp is not finite ({stamp})")
        if self._stamps:
            newest = self._stamps[-1]
            if stamp < newest:
                raise ObservationError(
                    f"camera {self.camera.name}: frame stamp {stamp:.6f} is older than the newest "
                    f"frame {newest:.6f} (out of order)"
                )
            if stamp == newest:
                self._images[-1] = image
                return
        self._stamps.append(stamp)
        self._images.append(image)
        self._prune()

    def _prune(self) -> None:
        # Keep every frame that a window ending up to keep_extra_s ago could use, plus the newest
        # one before that: it may be the nearest to the oldest slot; anything older never can be.
        cutoff = self._stamps[-1] - self.span_s - self.keep_extra_s
        first_inside = bisect.bisect_left(self._stamps, cutoff)
        drop = max(first_inside - 1, len(self._stamps) - self.max_frames, 0)
        if drop:
            del self._stamps[:drop]
            del self._images[:drop]

    def _select(self, end_stamp: float | None) -> list[int]:
        if not self._stamps:
            raise ObservationError(f"camera {self.camera.name}: no frame received yet")
        if end_stamp is None:
            last = len(self._stamps) - 1
        else:
            last = bisect.bisect_right(self._stamps, end_stamp) - 1
            if last < 0:
                raise ObservationError(
                    f"camera {self.camera.name}: no frame at or before {end_stamp:.6f} "
                    f"(oldest kept {self._stamps[0]:.6f})"
                )
        end = self._stamps[last]
        stamps = self._stamps
        picks = []
        for slot in range(self.frames_per_window):
            target = end - (self.frames_per_window - 1 - slot) * self.stride_s
            j = bisect.bisect_left(stamps, target, 0, last + 1)  # first frame >= target
            if j > last:
                j = last
            elif j > 0 and target - stamps[j - 1] < stamps[j] - target:
                j -= 1  # the older neighbour is strictly nearer
            picks.append(j)
        return picks

    def frames(self, end_stamp: float | None = None) -> ImageArray:
        """(T, H, W, 3) uint8, oldest first, ending at the newest frame at or before ``end_stamp``
        (default: the newest frame). A fresh contiguous array."""
        return np.stack([self._images[j] for j in self._select(end_stamp)])

    def frame_stamps(self, end_stamp: float | None = None) -> tuple[float, ...]:
        """The stamps of the frames :meth:`frames` would return, oldest first."""
        return tuple(self._stamps[j] for j in self._select(end_stamp))
