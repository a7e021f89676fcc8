"""The LeRobot v3.0 reader: a dataset directory -> :class:`~qvla_core.data.sample.TrainingSample`.

``LeRobotDataset(root, embodiment)`` reads datasets our writer made and ones downloaded from the
LeRobot hub (e.g. the ALOHA sim datasets: ``observation.images.top``, channel names given as
``{"motors": [...]}``). On opening it checks

* the directory is a finished dataset (no staging marker, meta files present),
* info.json against the files (vector widths against the data parquet, camera sizes and frame
  rate against the MP4 headers, frame timestamps against fps, episode rows against data rows and
  video lengths),
* the features against the robot YAML's embodiment (state/action names and widths, every camera
  with its size, fps against ``control_rate_hz``), and that no state or action is NaN/inf,

each failure naming the file, the key or episode and the value. Camera frames come from a
:mod:`~qvla_core.data.frame_store` (decoded once into a memory-mapped cache with ``cache_dir``).

A sample at frame ``k`` of an episode is what the policy node would build at that tick: each
camera's ``history.frames`` frames spaced ``stride_s`` (the nearest frame, a tie to the newer; before
the episode start the first frame), the state, the task text, and the ``horizon`` actions from
``k`` on (past the episode's end the last action repeats and ``action_is_pad`` is True). A waypoint
embodiment's rows are one-step poses, composed into the waypoints, and its action statistics are
the waypoints' (:mod:`qvla_core.data.waypoints`).

A little over 400 lines because every check above runs once, at opening, against one set of
tables; the checks of damaged input themselves live in :mod:`qvla_core.data.integrity`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qvla_core.data import format as fmt
from qvla_core.data.format import DatasetError, Info
from qvla_core.data.frame_store import CameraVideos, EpisodeFrames, FrameCache
from qvla_core.data.integrity import STAT_NAMES, check_video_spans, checked_stats, usable
from qvla_core.data.sample import TrainingSample
from qvla_core.data.tables import Episode, episode_rows, read_episodes, read_frames, read_tasks
from qvla_core.data.video import probe
from qvla_core.data.waypoints import WaypointLayout
from qvla_core.embodiment import Camera, Embodiment, FrameHistory
from qvla_core.logs import get_logger
from qvla_core.policy import Observation

log = get_logger("qvla.data")


def fingerprint(root: Path) -> str:
    """A short hash of the metadata files' contents and the data/video files' sizes and times."""
    h = hashlib.sha256()
    meta = sorted(p for p in (root / "meta").rglob("*") if p.is_file())
    for path in meta:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    for sub in (fmt.DATA_DIR, fmt.VIDEO_DIR):
        for path in sorted(p for p in (root / sub).rglob("*") if p.is_file()):
            st = path.stat()
            h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def history_offsets(history: FrameHistory, fps: float) -> list[int]:
    """Frames back from the newest, oldest slot first: slot ``i`` targets ``(frames-1-i)*stride_s``
    earlier and gets the nearest frame, a tie going to the newer one (as the policy node's history)."""
    return [
        max(0, math.ceil((history.frames - 1 - i) * history.stride_s * fps - 0.5 - 1e-9))
        for i in range(history.frames)
    ]


def _video_key(info: Info, given: str, what: str) -> str | None:
    """The video feature key a camera name or key refers to (None when the dataset has none)."""
    key = given if given in info.features else fmt.image_key(given)
    if info.features.get(key, {}).get("dtype") == "image":
        raise DatasetError(
            f"{info.path}: features.{key}: {what} is stored as images in the parquet files (dtype 'image'); "
            "this reader reads cameras stored as video only (re-encode them with LeRobot's tools)"
        )
    return key if key in info.video_keys else None


def _camera_keys(info: Info, embodiment: Embodiment, camera_map: Mapping[str, str] | None) -> dict[str, str]:
    """Embodiment camera name -> the dataset's video key for it."""
    names = set(embodiment.camera_names)
    chosen: dict[str, str] = {}
    for given, camera in (camera_map or {}).items():
        key = _video_key(info, given, f"camera_map's {given!r}")
        if key is None:
            raise DatasetError(
                f"{info.path}: camera_map: {given!r} is not a camera of the dataset "
                f"(has {list(info.video_keys)})"
            )
        if camera not in names:
            raise DatasetError(
                f"camera_map: {given!r} -> {camera!r}, but the robot YAML's cameras are {sorted(names)}"
            )
        if camera in chosen:
            raise DatasetError(f"camera_map: two dataset cameras map to {camera!r}")
        chosen[camera] = key
    for camera in embodiment.camera_names:
        if camera not in chosen:
            key = _video_key(info, camera, f"the robot YAML's camera {camera!r}")
            if key is None:
                raise DatasetError(
                    f"{info.path}: the robot YAML's camera {camera!r} has no {fmt.image_key(camera)!r} in "
                    f"the dataset (its cameras: {list(info.video_keys)}); map one with camera_map "
                    f"(--camera-map KEY={camera})"
                )
            chosen[camera] = key
    return chosen


def _check_vector_feature(info: Info, key: str, want: Sequence[str], what: str) -> None:
    if key not in info.features:
        raise DatasetError(
            f"{info.path}: features.{key}: missing, but the robot YAML has {len(want)} {what} channels"
        )
    (width,) = info.shape(key) if len(info.shape(key)) == 1 else (-1,)
    if width != len(want):
        raise DatasetError(
            f"{info.where(key)}.shape: {list(info.shape(key))}, but the robot YAML has {len(want)} {what} "
            f"channels {list(want)}"
        )
    names = fmt.feature_names(info.features[key])
    if names is None:
        log.warning(
            "%s: %s has no channel names; assuming the robot YAML's order %s", info.path, key, list(want)
        )
    elif names != list(want):
        raise DatasetError(
            f"{info.where(key)}.names: {names}, but the robot YAML's {what} channels are {list(want)} "
            "(same names in the same order needed)"
        )


def check_features(info: Info, embodiment: Embodiment, cameras: Mapping[str, str]) -> None:
    """The dataset's features fit the embodiment: rate, state/action channels, camera sizes."""
    if not math.isclose(info.fps, embodiment.control_rate_hz, rel_tol=1e-6):
        raise DatasetError(
            f"{info.path}: fps: {info.fps:g}, but the robot YAML's control_rate_hz is "
            f"{embodiment.control_rate_hz:g} (record at the control rate, or fix the YAML)"
        )
    if embodiment.state:
        _check_vector_feature(info, fmt.STATE_KEY, embodiment.state_names, "state")
    _check_vector_feature(info, fmt.ACTION_KEY, embodiment.action_names, "action")
    by_name: dict[str, Camera] = {c.name: c for c in embodiment.cameras}
    for camera, key in cameras.items():
        hw = fmt.image_hw(info.features[key])
        cam = by_name[camera]
        if hw != (cam.height, cam.width):
            raise DatasetError(
                f"{info.where(key)}.shape: {hw[0]}x{hw[1]} (height x width), but the robot YAML's camera "
                f"{camera!r} is {cam.height}x{cam.width}"
            )


class LeRobotDataset:
    """A LeRobot v3.0 dataset read for one embodiment (implements SampleSource)."""

    def __init__(
        self,
        root: Path,
        embodiment: Embodiment,
        *,
        camera_map: Mapping[str, str] | None = None,
        cache_dir: Path | None = None,
        episodes: Sequence[int] | None = None,
    ) -> None:
        self.root = Path(root)
        fmt.check_complete(self.root)
        self.info = fmt.read_info(self.root)
        self._embodiment = embodiment
        self.camera_keys = _camera_keys(self.info, embodiment, camera_map)
        check_features(self.info, embodiment, self.camera_keys)
        self.tasks = read_tasks(self.root)
        video_keys = sorted(set(self.camera_keys.values()))
        all_episodes = read_episodes(self.root, video_keys)
        if not all_episodes:
            raise DatasetError(f"{self.root / fmt.EPISODES_DIR}: no episodes (an empty dataset)")
        self._check_totals(all_episodes)
        self._frames = read_frames(self.root, self.info, all_episodes, with_state=bool(embodiment.state))
        self._rows = {ep.index: self._check_episode(ep) for ep in all_episodes}
        self._all = {ep.index: ep for ep in all_episodes}
        cameras = {key: self._camera_videos(key) for key in video_keys}
        self._check_videos(all_episodes, cameras)
        self._fingerprint = fingerprint(self.root)
        if cache_dir is not None:
            self._store: FrameCache | EpisodeFrames = FrameCache(
                cameras, Path(cache_dir) / f"lerobot-{self._fingerprint}"
            )
        else:
            self._store = EpisodeFrames(cameras)
        self._stats = self._read_stats()
        self._waypoints = WaypointLayout(embodiment) if WaypointLayout.applies(embodiment) else None
        if self._waypoints is not None:
            rows = [self._frames.action[self._rows[i]] for i in sorted(self._rows)]
            self._stats[fmt.ACTION_KEY] = self._waypoints.stats(rows, embodiment.horizon)
        self._offsets = {c.name: history_offsets(c.history, self.info.fps) for c in embodiment.cameras}
        self._select(all_episodes if episodes is None else [self._episode(e) for e in episodes])

    # -- opening ---------------------------------------------------------------------------------

    def _episode(self, index: int) -> Episode:
        if index not in self._all:
            raise DatasetError(f"{self.root}: no episode {index} (has {sorted(self._all)})")
        return self._all[index]

    def _check_totals(self, episodes: Sequence[Episode]) -> None:
        frames = sum(ep.length for ep in episodes)
        for key, says, has in (
            ("total_episodes", self.info.total_episodes, len(episodes)),
            ("total_frames", self.info.total_frames, frames),
        ):
            if says != has:
                raise DatasetError(f"{self.info.path}: {key}: says {says}, but meta/episodes has {has}")
        if self.info.total_tasks is not None and self.info.total_tasks != len(self.tasks):
            raise DatasetError(
                f"{self.info.path}: total_tasks: says {self.info.total_tasks}, but {fmt.TASKS_PATH} has "
                f"{len(self.tasks)}"
            )
        for ep in episodes:
            unknown = [t for t in ep.tasks if t not in self.tasks.values()]
            if unknown:
                raise DatasetError(
                    f"{ep.source}: episode {ep.index}'s task(s) {unknown} are not listed in "
                    f"{self.root / fmt.TASKS_PATH}"
                )

    def _check_episode(self, ep: Episode) -> slice:
        data_file = self.root / self.info.data_path.format(
            chunk_index=ep.data_file[0], file_index=ep.data_file[1]
        )
        rows = episode_rows(self._frames, ep, data_file)
        f = self._frames
        for key, values, names in (
            (fmt.STATE_KEY, f.state, self._embodiment.state_names),
            (fmt.ACTION_KEY, f.action, self._embodiment.action_names),
        ):
            if values is None:
                continue
            bad = ~np.isfinite(values[rows])
            if bad.any():
                frame, channel = (int(i) for i in np.argwhere(bad)[0])
                raise DatasetError(
                    f"{data_file}: episode {ep.index} frame {frame}: {key} channel {names[channel]} is "
                    f"{values[rows][frame, channel]} ({int(bad.sum())} non-finite values in the episode)"
                )
        unknown = sorted(set(f.task_index[rows].tolist()) - set(self.tasks))
        if unknown:
            raise DatasetError(
                f"{data_file}: episode {ep.index}: task_index {unknown} not in {fmt.TASKS_PATH}"
            )
        steps = np.diff(f.timestamp[rows])
        period = 1.0 / self.info.fps
        off = np.abs(steps - period) > max(fmt.TIMESTAMP_TOLERANCE_S, 1e-3 * period)
        if off.any():
            k = int(np.argmax(off))
            raise DatasetError(
                f"{self.info.path}: fps: says {self.info.fps:g}, but episode {ep.index} in {data_file} has "
                f"frames {k} and {k + 1} {steps[k]:.4f} s apart (expected {period:.4f} s)"
            )
        return rows

    def _camera_videos(self, key: str) -> CameraVideos:
        h, w = fmt.image_hw(self.info.features[key])
        assert self.info.video_path is not None
        return CameraVideos(key, self.root, self.info.video_path, self.info.fps, h, w)

    def _check_videos(self, episodes: Sequence[Episode], cameras: Mapping[str, CameraVideos]) -> None:
        for key, cam in cameras.items():
            files: dict[Path, list[Episode]] = {}
            for ep in episodes:
                files.setdefault(cam.path(ep.videos[key]), []).append(ep)
            frames: dict[Path, int] = {}
            for path, eps in files.items():
                if not path.is_file():
                    raise DatasetError(
                        f"{path}: missing video file ({eps[0].source} puts episode {eps[0].index}'s "
                        f"{key} there)"
                    )
                header = probe(path)
                frames[path] = header.frames
                if (header.height, header.width) != (cam.height, cam.width):
                    raise DatasetError(
                        f"{self.info.where(key)}.shape: says {cam.height}x{cam.width}, but {path} is "
                        f"{header.height}x{header.width} (height x width)"
                    )
                if not math.isclose(header.fps, self.info.fps, rel_tol=1e-3):
                    raise DatasetError(
                        f"{self.info.path}: fps: says {self.info.fps:g}, but {path} runs at "
                        f"{header.fps:g} fps"
                    )
            check_video_spans(key, files, self.info.fps, frames)

    def _read_stats(self) -> dict[str, dict[str, list[float]]]:
        path = self.root / fmt.STATS_PATH
        raw: Any = fmt.read_json(path) if path.is_file() else {}
        out: dict[str, dict[str, list[float]]] = {}
        f = self._frames
        for key, names, values in (
            (fmt.STATE_KEY, self._embodiment.state_names, f.state),
            (fmt.ACTION_KEY, self._embodiment.action_names, f.action),
        ):
            width = len(names)
            entry = raw.get(key) if isinstance(raw, dict) else None
            if values is not None and width and usable(entry):
                out[key] = checked_stats(path, key, entry, values, names)
            elif values is None or width == 0:
                out[key] = {s: [] for s in STAT_NAMES}
            else:  # no (usable) stats.json: compute them from the frames
                log.warning("%s: no %s statistics; computing them from the data", path, key)
                q = np.quantile(values.astype(np.float64), [0.01, 0.10, 0.50, 0.90, 0.99], axis=0)
                computed = {
                    "min": values.min(0),
                    "max": values.max(0),
                    "mean": values.mean(0),
                    "std": values.std(0),
                }
                computed.update(zip(("q01", "q10", "q50", "q90", "q99"), q, strict=True))
                out[key] = {s: [float(v) for v in computed[s]] for s in STAT_NAMES}
        return out

    def _select(self, episodes: Sequence[Episode]) -> None:
        chosen = sorted({ep.index for ep in episodes})
        self._selected = [self._all[i] for i in chosen]
        self._starts = np.cumsum([0] + [ep.length for ep in self._selected])

    # -- SampleSource ----------------------------------------------------------------------------

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    @property
    def fps(self) -> float:
        return self.info.fps

    @property
    def episodes(self) -> tuple[int, ...]:
        return tuple(ep.index for ep in self._selected)

    @property
    def stats(self) -> dict[str, dict[str, list[float]]]:
        return {k: {s: list(v) for s, v in d.items()} for k, d in self._stats.items()}

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def episode(self, index: int) -> Episode:
        """The meta/episodes row of an episode (length, tasks, success, metadata)."""
        return self._episode(index)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def select_episodes(self, episodes: Sequence[int]) -> LeRobotDataset:
        """The same dataset (sharing its loaded tables and frame store) restricted to ``episodes``."""
        other = object.__new__(LeRobotDataset)
        other.__dict__.update(self.__dict__)
        other._select([self._episode(e) for e in episodes])
        return other

    def prepare_cache(self) -> None:
        """Decode every video the selected episodes use into the frame cache now (needs cache_dir)."""
        if isinstance(self._store, FrameCache):
            self._store.prepare(self._selected)

    def __getitem__(self, index: int) -> TrainingSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        index %= len(self)
        pos = int(np.searchsorted(self._starts, index, side="right")) - 1
        ep = self._selected[pos]
        k = index - int(self._starts[pos])
        rows = self._rows[ep.index]
        row = rows.start + k
        images = {}
        for camera, key in self.camera_keys.items():
            indices = [max(0, k - back) for back in self._offsets[camera]]
            images[camera] = self._store.frames(key, ep, indices)
        f = self._frames
        horizon = self._embodiment.horizon
        take = np.minimum(np.arange(row, row + horizon), rows.stop - 1)
        state = (
            f.state[row].copy() if f.state is not None and self._embodiment.state else np.zeros(0, np.float32)
        )
        observation = Observation(
            images=images,
            state=state,
            instruction=self.tasks[int(f.task_index[row])],
            stamp=float(f.timestamp[row]),
        )
        if self._waypoints is not None:
            actions = self._waypoints.chunk(f.action[row : min(row + horizon, rows.stop)], horizon)
        else:
            actions = f.action[take].copy()
        return TrainingSample(
            observation=observation,
            actions=actions,
            action_is_pad=np.arange(row, row + horizon) >= rows.stop,
            episode_index=ep.index,
            frame_index=k,
            embodiment=self._embodiment.name,
        )
