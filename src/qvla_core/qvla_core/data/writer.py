"""Writes a LeRobot v3.0 dataset episode by episode (:class:`DatasetWriter`).

Frames stream straight into one video encoder per camera; only the episode's state/action rows
(a few kB) are held until :meth:`DatasetWriter.save_episode`. Everything is written into a staging
directory next to ``root`` (marked with ``QVLA_STAGING``) and renamed to ``root`` by
:meth:`DatasetWriter.finalize`, so an interrupted conversion never leaves a directory that loads as
a complete dataset. ``meta/info.json`` is the last file written.

Beyond LeRobot's columns, each episode row carries ``qvla/success`` (bool or null) and
``qvla/metadata`` (a JSON object as text); info.json has a ``qvla`` block with the writer's video
settings. LeRobot's reader ignores both.

Longer than 400 lines because staging, per-episode validation, streaming encoders and the final
metadata are one transaction (nothing loads as a dataset until finalize); tables.py, video.py and
stats.py already hold the formats it writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from qvla_core.data import format as fmt
from qvla_core.data.format import DatasetError
from qvla_core.data.stats import ImageStats, Stats, aggregate, episode_columns, to_lists, vector_stats
from qvla_core.data.tables import write_episodes, write_tasks
from qvla_core.data.video import EpisodeEncoder, VideoFileWriter, VideoSettings, check_frame, video_info
from qvla_core.embodiment import Embodiment

FloatArray = npt.NDArray[np.float32]
ImageArray = npt.NDArray[np.uint8]
MB = 1024 * 1024
WRITER_FORMAT = 1


def _check_vector(value: Any, names: Sequence[str], what: str, where: str) -> FloatArray:
    array = np.asarray(value, dtype=np.float32)
    if array.shape != (len(names),):
        raise DatasetError(
            f"{where}: {what}: expected {len(names)} values {list(names)}, got shape {array.shape}"
        )
    bad = ~np.isfinite(array)
    if bad.any():
        channels = [f"{names[int(i)]}={array[int(i)]}" for i in np.flatnonzero(bad)]
        raise DatasetError(f"{where}: {what}: not finite in channel(s) {', '.join(channels)}")
    return array


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name or name != name.strip():
        raise DatasetError(f"{what} {name!r}: must be non-empty, without '/' or surrounding spaces")


class _Rolling:
    """The current file of one kind (data parquet, or one camera's MP4) and when to start the next."""

    def __init__(self, limit_mb: int) -> None:
        self.limit = limit_mb * MB
        self.position = 0  # how many files of this kind were started before the current one
        self.rows = 0  # rows (or frames) in the current file

    def index(self) -> tuple[int, int]:
        return fmt.chunk_file(self.position, fmt.CHUNKS_SIZE)

    def full(self, size_now: int, adding: int) -> bool:
        return self.rows > 0 and size_now + adding >= self.limit

    def next(self) -> None:
        self.position += 1
        self.rows = 0


class DatasetWriter:
    """Write episodes of one robot into a new LeRobot v3.0 dataset at ``root``.

    ``cameras`` maps a camera name to its (height, width); its feature key is
    ``observation.images.<name>``. ``state_names`` may be empty (no ``observation.state`` feature).
    Frame timestamps [s] must lie on the 1/fps grid of their episode (within 0.1 ms, as LeRobot's
    reader checks); they are stored from 0 at each episode's first frame.
    """

    def __init__(
        self,
        root: Path,
        *,
        fps: float,
        robot_type: str,
        state_names: Sequence[str],
        action_names: Sequence[str],
        cameras: Mapping[str, tuple[int, int]],
        overwrite: bool = False,
        video: VideoSettings | None = None,
    ) -> None:
        self.root = Path(root)
        if not (math.isfinite(fps) and fps > 0):
            raise DatasetError(f"{self.root}: fps must be a positive number (got {fps})")
        if not action_names:
            raise DatasetError(f"{self.root}: action_names is empty (a dataset needs actions)")
        for label, names in (("state", state_names), ("action", action_names), ("camera", list(cameras))):
            for name in names:
                _check_name(name, f"{self.root}: {label} name")
            if len(set(names)) != len(names):
                raise DatasetError(f"{self.root}: {label} names repeat: {list(names)}")
        for cam, size in cameras.items():
            if len(size) != 2 or not all(isinstance(s, int) and s > 0 and s % 2 == 0 for s in size):
                raise DatasetError(
                    f"{self.root}: camera {cam}: size must be (height, width), even ints > 0 (got {size})"
                )
        if self.root.exists() and not overwrite:
            raise DatasetError(f"{self.root}: already exists (pass overwrite=True to replace it)")
        self.fps = float(fps)
        self.robot_type = robot_type
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names)
        self.cameras = {name: (int(h), int(w)) for name, (h, w) in cameras.items()}
        self.overwrite = overwrite
        self.video = video or VideoSettings()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.staging-", dir=self.root.parent))
        (self.staging / fmt.STAGING_MARKER).write_text(
            f"DatasetWriter for {self.root} (pid {os.getpid()}) has not finished.\n", encoding="utf-8"
        )
        self._closed = False
        self._tasks: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._frames_total = 0
        self._numeric_stats: list[dict[str, Stats]] = []
        self._image_stats = {cam: ImageStats() for cam in self.cameras}
        self._data = _Rolling(fmt.DATA_FILE_SIZE_MB)
        self._data_writer: Any = None
        self._videos = {cam: _Rolling(fmt.VIDEO_FILE_SIZE_MB) for cam in self.cameras}
        self._video_writers: dict[str, VideoFileWriter] = {}
        self._reset_episode()

    @classmethod
    def for_embodiment(cls, root: Path, embodiment: Embodiment, *, overwrite: bool = False) -> DatasetWriter:
        """A writer for the robot a YAML describes: its rate, name, state and action channels and
        cameras at their sizes (what qvla-convert writes)."""
        return cls(
            root,
            fps=embodiment.control_rate_hz,
            robot_type=embodiment.name,
            state_names=embodiment.state_names,
            action_names=embodiment.action_names,
            cameras={c.name: (c.height, c.width) for c in embodiment.cameras},
            overwrite=overwrite,
        )

    # -- one episode ---------------------------------------------------------------------------

    @property
    def episode_index(self) -> int:
        """The index the episode being recorded will get."""
        return len(self._episodes)

    @property
    def frames_staged(self) -> int:
        return len(self._timestamps)

    def _reset_episode(self) -> None:
        self._states: list[FloatArray] = []
        self._actions: list[FloatArray] = []
        self._timestamps: list[float] = []
        self._encoders: dict[str, EpisodeEncoder] = {}
        self._episode_images = {cam: ImageStats() for cam in self.cameras}

    def _where(self) -> str:
        return f"{self.root}: episode {self.episode_index} frame {self.frames_staged}"

    def add_frame(
        self, *, state: FloatArray, action: FloatArray, images: Mapping[str, ImageArray], timestamp: float
    ) -> None:
        """Add one control tick: the state, the action due at it, one image per camera, its time [s]."""
        self._check_open()
        where = self._where()
        state_row = _check_vector(state, self.state_names, "state", where)
        action_row = _check_vector(action, self.action_names, "action", where)
        if set(images) != set(self.cameras):
            raise DatasetError(
                f"{where}: images for cameras {sorted(images)}, expected {sorted(self.cameras)}"
            )
        frames = {cam: check_frame(images[cam], cam, self.cameras[cam], where) for cam in self.cameras}
        self._check_timestamp(float(timestamp), where)
        if not self._encoders:
            tmp = self.staging / ".episode"
            for cam, (h, w) in self.cameras.items():
                enc = EpisodeEncoder(tmp / f"{cam}.mp4", fps=self.fps, height=h, width=w, settings=self.video)
                self._encoders[cam] = enc
        for cam, image in frames.items():
            self._encoders[cam].add(image)
            self._episode_images[cam].add(image)
        self._states.append(state_row)
        self._actions.append(action_row)
        self._timestamps.append(float(timestamp))

    def _check_timestamp(self, t: float, where: str) -> None:
        if not math.isfinite(t):
            raise DatasetError(f"{where}: timestamp is not finite ({t})")
        if not self._timestamps:
            return
        k = len(self._timestamps)
        expected = self._timestamps[0] + k / self.fps
        if abs(t - expected) > fmt.TIMESTAMP_TOLERANCE_S:
            raise DatasetError(
                f"{where}: timestamp {t:.6f} s is off the {self.fps:g} fps grid (expected {expected:.6f} s: "
                f"frame {k} after the first at {self._timestamps[0]:.6f} s); resample onto the control ticks"
            )

    def discard_episode(self) -> None:
        """Drop the frames of the episode being recorded."""
        self._check_open()
        for enc in self._encoders.values():
            enc.abort()
        shutil.rmtree(self.staging / ".episode", ignore_errors=True)
        self._reset_episode()

    def save_episode(
        self, task: str, *, success: bool | None = None, metadata: Mapping[str, Any] | None = None
    ) -> int:
        """Store the recorded frames as an episode of ``task``; returns its episode index."""
        self._check_open()
        index = self.episode_index
        if not self._timestamps:
            raise DatasetError(f"{self.root}: episode {index}: no frames to save (an empty episode)")
        if not isinstance(task, str) or not task.strip():
            raise DatasetError(f"{self.root}: episode {index}: task must be a non-empty text (got {task!r})")
        try:
            meta_text = json.dumps(dict(metadata or {}), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"{self.root}: episode {index}: metadata is not JSON-serialisable: {exc}"
            ) from exc
        task_index = self._tasks.setdefault(task, len(self._tasks))
        length = len(self._timestamps)
        start = self._frames_total
        columns = self._frame_columns(index, task_index, start)
        row: dict[str, Any] = {"episode_index": index, "tasks": [task], "length": length}
        row.update(self._write_data(columns))
        row["dataset_from_index"], row["dataset_to_index"] = start, start + length
        for cam in self.cameras:
            row.update(self._write_video(cam, length))
        stats = {k: vector_stats(v) for k, v in columns.items()}
        stats.update({fmt.image_key(c): s.stats() for c, s in self._episode_images.items()})
        row.update(episode_columns(stats))
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        row["qvla/success"] = success
        row["qvla/metadata"] = meta_text
        self._episodes.append(row)
        self._numeric_stats.append({k: v for k, v in stats.items() if not k.startswith(fmt.IMAGE_PREFIX)})
        for cam, s in self._episode_images.items():
            self._image_stats[cam].merge(s)
        self._frames_total += length
        shutil.rmtree(self.staging / ".episode", ignore_errors=True)
        self._reset_episode()
        return index

    def _frame_columns(self, episode: int, task_index: int, start: int) -> dict[str, npt.NDArray[Any]]:
        n = len(self._timestamps)
        t0 = self._timestamps[0]
        columns: dict[str, npt.NDArray[Any]] = {}
        if self.state_names:
            columns[fmt.STATE_KEY] = np.stack(self._states)
        columns[fmt.ACTION_KEY] = np.stack(self._actions)
        columns["timestamp"] = np.array([t - t0 for t in self._timestamps], dtype=np.float32)
        columns["frame_index"] = np.arange(n, dtype=np.int64)
        columns["episode_index"] = np.full(n, episode, dtype=np.int64)
        columns["index"] = np.arange(start, start + n, dtype=np.int64)
        columns["task_index"] = np.full(n, task_index, dtype=np.int64)
        return columns

    # -- files ---------------------------------------------------------------------------------

    def _write_data(self, columns: Mapping[str, npt.NDArray[Any]]) -> dict[str, int]:
        arrays = []
        for values in columns.values():
            if values.ndim == 2:
                flat = pa.array(values.astype(np.float32).ravel(), type=pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            else:
                arrays.append(pa.array(values))
        table = pa.Table.from_arrays(arrays, names=list(columns))
        if self._data_writer is not None and self._data.full(
            Path(self._data_writer.where).stat().st_size, table.nbytes
        ):
            self._data_writer.close()
            self._data_writer = None
            self._data.next()
        chunk, file = self._data.index()
        if self._data_writer is None:
            path = self.staging / fmt.DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(str(path), table.schema)
        self._data_writer.write_table(table)
        self._data.rows += table.num_rows
        return {"data/chunk_index": chunk, "data/file_index": file}

    def _write_video(self, cam: str, length: int) -> dict[str, Any]:
        frames = self._encoders[cam].close()
        if frames != length:
            raise DatasetError(
                f"{self.root}: episode {self.episode_index}: camera {cam} encoded {frames} frames of {length}"
            )
        episode_file = self.staging / ".episode" / f"{cam}.mp4"
        rolling, writer = self._videos[cam], self._video_writers.get(cam)
        if writer is not None and rolling.full(writer.size_bytes(), episode_file.stat().st_size):
            writer.close()
            rolling.next()
            writer = None
        chunk, file = rolling.index()
        if writer is None:
            key = fmt.image_key(cam)
            path = self.staging / fmt.VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
            writer = self._video_writers[cam] = VideoFileWriter(path, fps=self.fps)
        start, end = writer.append(episode_file, frames)
        rolling.rows += frames
        prefix = f"videos/{fmt.image_key(cam)}"
        return {
            f"{prefix}/chunk_index": chunk,
            f"{prefix}/file_index": file,
            f"{prefix}/from_timestamp": start,
            f"{prefix}/to_timestamp": end,
        }

    # -- the whole dataset ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise DatasetError(f"{self.root}: the writer is closed (finalize() or abort() was called)")

    def finalize(self) -> Path:
        """Write the metadata and move the finished dataset to ``root``; returns ``root``."""
        self._check_open()
        if self._timestamps:
            raise DatasetError(
                f"{self.root}: episode {self.episode_index} has {self.frames_staged} unsaved frames: "
                "call save_episode() or discard_episode() first"
            )
        if not self._episodes:
            self.abort()
            raise DatasetError(f"{self.root}: no episodes were saved; an empty dataset is not written")
        if self._data_writer is not None:
            self._data_writer.close()
        for writer in self._video_writers.values():
            writer.close()
        self._write_meta()
        self._closed = True
        (self.staging / fmt.STAGING_MARKER).unlink()
        self._move_into_place()
        return self.root

    def _features(self) -> dict[str, dict[str, Any]]:
        features: dict[str, dict[str, Any]] = {}
        if self.state_names:
            features[fmt.STATE_KEY] = fmt.vector_feature(self.state_names)
        features[fmt.ACTION_KEY] = fmt.vector_feature(self.action_names)
        for cam, (h, w) in self.cameras.items():
            key = fmt.image_key(cam)
            first = self.staging / fmt.VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0)
            features[key] = fmt.video_feature(h, w, video_info(first, self.video))
        features.update({k: dict(v) for k, v in fmt.DEFAULT_FEATURES.items()})
        return features

    def _write_meta(self) -> None:
        s = self.staging
        tasks = sorted(self._tasks, key=self._tasks.__getitem__)
        write_tasks(s, tasks)
        write_episodes(s, self._episodes)
        keys = self._numeric_stats[0].keys()
        stats: dict[str, Stats] = {k: aggregate([e[k] for e in self._numeric_stats]) for k in keys}
        stats.update({fmt.image_key(c): st.stats() for c, st in self._image_stats.items()})
        fmt.write_json(s / fmt.STATS_PATH, to_lists(stats))
        qvla = {
            "writer_format": WRITER_FORMAT,
            "video": {
                "codec": self.video.codec,
                "crf": self.video.crf,
                "gop": self.video.gop,
                "preset": self.video.preset,
            },
        }
        info = fmt.new_info(
            fps=self.fps,
            robot_type=self.robot_type,
            features=self._features(),
            total_episodes=len(self._episodes),
            total_frames=self._frames_total,
            total_tasks=len(tasks),
            qvla=qvla,
        )
        fmt.write_json(s / fmt.INFO_PATH, info)

    def _move_into_place(self) -> None:
        old = None
        if self.root.exists():
            if not self.overwrite:
                raise DatasetError(
                    f"{self.root}: appeared while writing; the new dataset is left at {self.staging}"
                )
            old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
            os.replace(self.root, old)
        os.replace(self.staging, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Discard everything staged (nothing is left at ``root``)."""
        if self._closed:
            return
        self._closed = True
        for enc in self._encoders.values():
            enc.abort()
        if self._data_writer is not None:
            self._data_writer.close()
        for writer in self._video_writers.values():
            with contextlib.suppress(Exception):  # the files are deleted next; any state is fine
                writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        if not self._closed:
            try:
                self.finalize()
            except BaseException:
                self.abort()
                raise
