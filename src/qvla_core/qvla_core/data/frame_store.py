"""Decoded camera frames of a dataset, so that reading a sample is a slice, not a video decode.

* :class:`FrameCache` (a ``cache_dir`` is given): each video file is decoded once, in full, into a
  uint8 ``.npy`` file under ``cache_dir/lerobot-<fingerprint>/`` and memory-mapped from then on.
  Building is atomic (a temporary file renamed when complete), so DataLoader workers that race
  to build the same file only waste time, and a changed dataset (new fingerprint) never reuses a
  stale cache. The cache takes frames x height x width x 3 bytes per camera: the free space is
  checked before decoding.
* :class:`EpisodeFrames` (no ``cache_dir``): an episode is decoded when one of its frames is
  first asked for and the last few episodes stay in memory; fine for reading in episode order
  (what a training frame cache built on top does), slow for random access.

Both objects pickle without their decoded frames (each DataLoader worker maps or decodes its own).
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm  # type: ignore[import-untyped]

from qvla_core.data.format import DatasetError
from qvla_core.data.tables import Episode, VideoSpan
from qvla_core.data.video import decode, probe
from qvla_core.logs import get_logger

log = get_logger("qvla.data")

ImageArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class CameraVideos:
    """Where one camera key's video files are, and the size of their frames."""

    key: str
    root: Path
    path_template: str
    fps: float
    height: int
    width: int

    def path(self, span: VideoSpan) -> Path:
        return self.root / self.path_template.format(
            video_key=self.key, chunk_index=span.chunk, file_index=span.file
        )

    def first_frame(self, span: VideoSpan) -> int:
        return round(span.from_timestamp * self.fps)


def _check_indices(indices: Sequence[int], episode: Episode, key: str) -> None:
    if min(indices) < 0 or max(indices) >= episode.length:
        raise IndexError(
            f"{key}: frames {list(indices)} outside episode {episode.index} (0..{episode.length - 1})"
        )


class EpisodeFrames:
    """Decode whole episodes on demand; keep the last ``keep`` episodes per camera in memory."""

    def __init__(self, cameras: Mapping[str, CameraVideos], keep: int = 2) -> None:
        self.cameras = dict(cameras)
        self.keep = keep
        self._decoded: OrderedDict[tuple[str, int], ImageArray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"cameras": self.cameras, "keep": self.keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cameras"], state["keep"])  # type: ignore[misc]

    def frames(self, key: str, episode: Episode, indices: Sequence[int]) -> ImageArray:
        _check_indices(indices, episode, key)
        slot = (key, episode.index)
        frames = self._decoded.get(slot)
        if frames is None:
            cam = self.cameras[key]
            span = episode.videos[key]
            start = cam.first_frame(span)
            decoded = list(decode(cam.path(span), cam.fps, start, start + episode.length))
            frames = np.stack(decoded)
            self._decoded[slot] = frames
            while len(self._decoded) > self.keep * len(self.cameras):
                self._decoded.popitem(last=False)
        else:
            self._decoded.move_to_end(slot)
        return frames[list(indices)]


class FrameCache:
    """Every video file decoded once into a memory-mapped uint8 array under ``directory``."""

    def __init__(self, cameras: Mapping[str, CameraVideos], directory: Path, progress: bool = True) -> None:
        self.cameras = dict(cameras)
        self.directory = directory
        self.progress = progress
        self._maps: dict[Path, npt.NDArray[np.uint8]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"cameras": self.cameras, "directory": self.directory, "progress": self.progress}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cameras"], state["directory"], state["progress"])  # type: ignore[misc]

    def frames(self, key: str, episode: Episode, indices: Sequence[int]) -> ImageArray:
        _check_indices(indices, episode, key)
        cam = self.cameras[key]
        span = episode.videos[key]
        array = self._file(cam, span)
        start = cam.first_frame(span)
        if start + episode.length > len(array):
            raise DatasetError(
                f"{cam.path(span)}: has {len(array)} frames but episode {episode.index} needs frames "
                f"{start}..{start + episode.length - 1} (the video is shorter than the data)"
            )
        return np.asarray(array[[start + i for i in indices]])

    def prepare(self, episodes: Sequence[Episode]) -> None:
        """Decode every file these episodes use now (instead of on first use)."""
        for key, cam in self.cameras.items():
            seen = set()
            for ep in episodes:
                span = ep.videos[key]
                if (span.chunk, span.file) not in seen:
                    seen.add((span.chunk, span.file))
                    self._file(cam, span)

    def cached_path(self, cam: CameraVideos, span: VideoSpan) -> Path:
        return self.directory / cam.key / f"chunk-{span.chunk:03d}-file-{span.file:03d}.npy"

    def _file(self, cam: CameraVideos, span: VideoSpan) -> npt.NDArray[np.uint8]:
        target = self.cached_path(cam, span)
        array = self._maps.get(target)
        if array is None:
            array = self._load(cam, target) if target.is_file() else None
            if array is None:
                self._build(cam, cam.path(span), target)
                array = np.load(target, mmap_mode="r")
            self._maps[target] = array
        return array

    @staticmethod
    def _load(cam: CameraVideos, target: Path) -> npt.NDArray[np.uint8] | None:
        """A cached file, or None (and a warning, the file removed) when it is cut or not of this
        camera's frames: it is then decoded again."""
        try:
            array: npt.NDArray[np.uint8] = np.load(target, mmap_mode="r")
            if array.dtype == np.uint8 and array.ndim == 4 and array.shape[1:] == (cam.height, cam.width, 3):
                return array
            problem = f"{array.dtype} {array.shape}, expected uint8 (frames, {cam.height}, {cam.width}, 3)"
        except (OSError, ValueError, EOFError) as exc:  # cut short, not a .npy, empty
            problem = f"{type(exc).__name__}: {exc}"
        log.warning("%s: the decoded-frame cache is damaged (%s); decoding the video again", target, problem)
        target.unlink(missing_ok=True)
        return None

    def _build(self, cam: CameraVideos, video: Path, target: Path) -> None:
        header = probe(video)
        shape = (header.frames, cam.height, cam.width, 3)
        need = int(np.prod(shape))
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if need > free:
            raise DatasetError(
                f"{target.parent}: the frame cache of {video} needs {need / 2**30:.2f} GiB but "
                f"{free / 2**30:.2f} GiB are free; give a cache_dir (--cache-dir) on a bigger disk, or none "
                "(decode per episode, slower)"
            )
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        count = 0
        frames = decode(video, cam.fps, 0, header.frames)
        label = f"decoding {cam.key} {video.parent.name}/{video.name}"
        for count, frame in enumerate(
            tqdm(frames, total=header.frames, desc=label, disable=not self.progress or None), 1
        ):
            if frame.shape != shape[1:]:
                raise DatasetError(f"{video}: frame {count - 1} is {frame.shape[:2]}, expected {shape[1:3]}")
            array[count - 1] = frame
        array.flush()
        del array
        if count != header.frames:
            tmp.unlink(missing_ok=True)
            raise DatasetError(f"{video}: decoded {count} frames but the header says {header.frames}")
        os.replace(tmp, target)
