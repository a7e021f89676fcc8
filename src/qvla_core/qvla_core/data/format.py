"""The LeRobot dataset format v3.0, as LeRobot writes it: paths, features and ``meta/info.json``.

A dataset directory::

    meta/info.json                                  codebase_version "v3.0", fps, features, path templates
    meta/stats.json                                 per-feature statistics over all frames
    meta/tasks.parquet                              task text -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode (lengths, file indices, stats)
    data/chunk-000/file-000.parquet                 one row per frame (state, action, indices)
    videos/<camera key>/chunk-000/file-000.mp4      one stream per camera, episodes back to back

Several episodes share a data file and a video file; an episode row says which file holds it
(``data/chunk_index``, ``data/file_index``, ``videos/<key>/chunk_index``, ...), where its rows are
(``dataset_from_index`` .. ``dataset_to_index``, the global ``index`` column) and where its frames
are in the video file (``videos/<key>/from_timestamp`` .. ``to_timestamp``, seconds).

This module only knows the format; it never imports the model.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvla_core.errors import QvlaError

CODEBASE_VERSION = "v3.0"

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"
VIDEO_DIR = "videos"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = EPISODES_DIR + "/" + CHUNK_FILE + ".parquet"
DATA_PATH = DATA_DIR + "/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = VIDEO_DIR + "/{video_key}/" + CHUNK_FILE + ".mp4"
# Present only while DatasetWriter is still writing the directory (removed just before the rename).
STAGING_MARKER = "QVLA_STAGING"

# LeRobot's defaults: files per chunk directory, and the size at which a new data / video file starts.
CHUNKS_SIZE = 1000
DATA_FILE_SIZE_MB = 100
VIDEO_FILE_SIZE_MB = 200

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
INDEX_KEYS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

# The per-frame bookkeeping columns every LeRobot dataset has (LeRobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}

# LeRobot's reader checks that frame timestamps sit on the 1/fps grid within this [s].
TIMESTAMP_TOLERANCE_S = 1e-4


class DatasetError(QvlaError):
    """A dataset directory is missing, incomplete, inconsistent or does not match the robot YAML."""


def image_key(camera: str) -> str:
    """The feature key of a camera: ``observation.images.<camera>``."""
    return IMAGE_PREFIX + camera


def chunk_file(position: int, chunks_size: int) -> tuple[int, int]:
    """(chunk_index, file_index) of the ``position``-th file of a kind (LeRobot fills a chunk
    directory with ``chunks_size`` files, then starts the next one)."""
    return position // chunks_size, position % chunks_size


def fps_value(fps: float) -> int | float:
    """fps as info.json stores it: an int when whole (LeRobot types it int)."""
    return int(fps) if float(fps).is_integer() else float(fps)


def vector_feature(names: Sequence[str]) -> dict[str, Any]:
    return {"dtype": "float32", "shape": [len(names)], "names": list(names)}


def video_feature(height: int, width: int, video_info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "dtype": "video",
        "shape": [height, width, 3],
        "names": ["height", "width", "channels"],
        "info": dict(video_info),
    }


def new_info(
    *,
    fps: float,
    robot_type: str,
    features: Mapping[str, Mapping[str, Any]],
    total_episodes: int,
    total_frames: int,
    total_tasks: int,
    qvla: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta/info.json`` of a finished dataset, keys in LeRobot's order (plus a ``qvla`` block)."""
    info: dict[str, Any] = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": total_episodes,
        "total_frames": total_frames,
        "total_tasks": total_tasks,
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_SIZE_MB,
        "video_files_size_in_mb": VIDEO_FILE_SIZE_MB,
        "fps": fps_value(fps),
        "splits": {"train": f"0:{total_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": {key: dict(value) for key, value in features.items()},
    }
    if qvla is not None:
        info["qvla"] = dict(qvla)
    return info


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from exc


def feature_names(feature: Mapping[str, Any]) -> list[str] | None:
    """A vector feature's channel names: a list, or a mapping with one list (``{"motors": [...]}``,
    as the public ALOHA datasets write it); None when the dataset names none."""
    names = feature.get("names")
    if names is None:
        return None
    if isinstance(names, Mapping):
        lists = [v for v in names.values() if isinstance(v, list)]
        if len(lists) != 1:
            return None
        names = lists[0]
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return list(names)
    return None


@dataclass(frozen=True)
class Info:
    """A checked ``meta/info.json``."""

    path: Path
    raw: dict[str, Any]
    fps: float
    robot_type: str | None
    total_episodes: int
    total_frames: int
    chunks_size: int
    data_path: str
    video_path: str | None
    features: dict[str, dict[str, Any]]
    total_tasks: int | None = None

    @property
    def video_keys(self) -> tuple[str, ...]:
        return tuple(k for k, f in self.features.items() if f.get("dtype") == "video")

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.features[key]["shape"])

    def where(self, key: str) -> str:
        """How messages name a feature key of this file."""
        return f"{self.path}: features.{key}"


def _need(path: Path, data: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise DatasetError(f"{path}: {key}: missing key")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DatasetError(f"{path}: {key}: wrong type (got {value!r})")
    return value


def _check_feature(path: Path, key: str, feature: Any) -> dict[str, Any]:
    if not isinstance(feature, dict):
        raise DatasetError(f"{path}: features.{key}: expected a mapping (got {feature!r})")
    dtype = feature.get("dtype")
    if not isinstance(dtype, str):
        raise DatasetError(f"{path}: features.{key}.dtype: missing or not a string (got {dtype!r})")
    shape = feature.get("shape")
    if not isinstance(shape, list | tuple) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise DatasetError(f"{path}: features.{key}.shape: expected a list of positive ints (got {shape!r})")
    if dtype in ("video", "image") and (len(shape) != 3 or 3 not in (shape[0], shape[2])):
        raise DatasetError(f"{path}: features.{key}.shape: expected (height, width, 3) (got {list(shape)})")
    return feature


def image_hw(feature: Mapping[str, Any]) -> tuple[int, int]:
    """(height, width) of an image/video feature (LeRobot writes (H, W, C); older files (C, H, W))."""
    shape = [int(s) for s in feature["shape"]]
    names = feature.get("names")
    if isinstance(names, list) and len(names) == 3 and names[0] == "channels":
        return shape[1], shape[2]
    if shape[2] == 3:
        return shape[0], shape[1]
    return shape[1], shape[2]


def read_info(root: Path) -> Info:
    """Load and check ``root/meta/info.json``: version, fps, totals, path templates, features."""
    path = root / INFO_PATH
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: <root>: expected a mapping (got {type(raw).__name__})")
    version = raw.get("codebase_version")
    if version != CODEBASE_VERSION:
        hint = (
            " (a LeRobot v2.x dataset: convert it with LeRobot's convert_dataset_v21_to_v30 script)"
            if isinstance(version, str) and version.startswith("v2")
            else ""
        )
        raise DatasetError(f"{path}: codebase_version: expected {CODEBASE_VERSION!r} (got {version!r}){hint}")
    fps = float(_need(path, raw, "fps", (int, float)))
    if not (math.isfinite(fps) and fps > 0):
        raise DatasetError(f"{path}: fps: must be a positive number (got {raw['fps']!r})")
    features = _need(path, raw, "features", dict)
    checked = {str(k): _check_feature(path, str(k), f) for k, f in features.items()}
    for key in ("episode_index", "index", "frame_index", "timestamp"):
        if key not in checked:
            raise DatasetError(f"{path}: features.{key}: missing (every LeRobot dataset has it)")
    totals = {k: int(_need(path, raw, k, int)) for k in ("total_episodes", "total_frames")}
    for k, v in totals.items():
        if v < 0:
            raise DatasetError(f"{path}: {k}: must be >= 0 (got {v})")
    video_path = raw.get("video_path")
    has_video = any(f["dtype"] == "video" for f in checked.values())
    if has_video and not isinstance(video_path, str):
        raise DatasetError(f"{path}: video_path: missing, but features have videos (got {video_path!r})")
    chunks_size = raw.get("chunks_size", CHUNKS_SIZE)
    if not isinstance(chunks_size, int) or isinstance(chunks_size, bool) or chunks_size <= 0:
        raise DatasetError(f"{path}: chunks_size: must be a positive integer (got {chunks_size!r})")
    data_path = str(_need(path, raw, "data_path", str))
    _check_template(path, "data_path", data_path, chunk_index=0, file_index=0)
    if isinstance(video_path, str):
        _check_template(path, "video_path", video_path, video_key="k", chunk_index=0, file_index=0)
    total_tasks = raw.get("total_tasks")
    robot_type = raw.get("robot_type")
    return Info(
        path=path,
        raw=raw,
        fps=fps,
        robot_type=robot_type if isinstance(robot_type, str) else None,
        total_episodes=totals["total_episodes"],
        total_frames=totals["total_frames"],
        chunks_size=chunks_size,
        data_path=data_path,
        video_path=video_path if isinstance(video_path, str) else None,
        features=checked,
        total_tasks=total_tasks
        if isinstance(total_tasks, int) and not isinstance(total_tasks, bool)
        else None,
    )


def _check_template(path: Path, key: str, template: str, **fields: Any) -> None:
    """A path template fills with the fields LeRobot gives it (no other placeholder, a valid format)."""
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetError(
            f"{path}: {key}: {template!r} is not a path template with {sorted(fields)} "
            f"({type(exc).__name__}: {exc}); LeRobot's is {DATA_PATH if key == 'data_path' else VIDEO_PATH!r}"
        ) from None


def check_complete(root: Path) -> None:
    """Refuse a directory that is not a finished dataset, naming what is missing."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory (no dataset here)")
    if (root / STAGING_MARKER).exists():
        raise DatasetError(
            f"{root}: a half-written dataset ({STAGING_MARKER} present: the writer was interrupted "
            "before it finished); delete it and convert again"
        )
    for rel in (INFO_PATH, TASKS_PATH):
        if not (root / rel).is_file():
            raise DatasetError(f"{root / rel}: missing (not a complete LeRobot v3.0 dataset)")
    if not (root / EPISODES_DIR).is_dir() or not any((root / EPISODES_DIR).glob("*/*.parquet")):
        raise DatasetError(f"{root / EPISODES_DIR}: no episodes parquet file (not a complete dataset)")
