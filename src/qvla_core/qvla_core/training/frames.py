"""From a dataset's samples to the trainer's batches.

A :class:`~qvla_core.data.sample.TrainingSample` carries the observation exactly as the policy node
builds it (images at the robot YAML's camera size). Each one is checked against the robot YAML
(errors name the dataset, episode, frame and channel) and its images are resized once to the model's
image size with the processor's own resize (:func:`qvla_core.model.processor.resize_images`), so the
processor skips that step later and the result is what inference computes.

Two ways to hold the frames, with the same batches:

* :class:`StreamFrames` reads samples from the dataset when a batch needs them (any dataset size;
  DataLoader workers can decode in parallel);
* :class:`CachedFrames` reads every sample once into arrays (``.npy`` files, memory-mapped) so a
  batch is a slice of them: no per-sample Python work in the training loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from qvla_core.data.sample import SampleSource, TrainingSample
from qvla_core.embodiment import Embodiment
from qvla_core.errors import TrainingError
from qvla_core.logs import get_logger
from qvla_core.model.processor import resize_images

CACHE_FORMAT = 1

log = get_logger("qvla.train")


@dataclass(frozen=True)
class Record:
    """One checked sample with its images at the model's size (what workers send back)."""

    images: npt.NDArray[np.uint8]  # (n_images, h, w, 3), prompt order
    state: npt.NDArray[np.float32]  # (n_state,)
    actions: npt.NDArray[np.float32]  # (horizon, n_action)
    action_is_pad: npt.NDArray[np.bool_]  # (horizon,)
    instruction: str
    episode: int
    frame: int


@dataclass
class TrainingBatch:
    """A batch of one embodiment, stacked; ``part`` says which frame set it came from."""

    part: int
    embodiment: str
    rows: Tensor  # int64 (B,): rows in that frame set (the features cache's key)
    images: Tensor  # uint8 (B, n_images, h, w, 3)
    state: Tensor  # float32 (B, n_state), robot units
    actions: Tensor  # float32 (B, horizon, n_action), robot units
    action_is_pad: Tensor  # bool (B, horizon)
    instructions: list[str]
    episode: Tensor  # int64 (B,)
    frame: Tensor  # int64 (B,)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def image_list(self) -> list[Tensor]:
        """The images as :meth:`QwenVLAPolicy.condition` takes them (one tensor, prompt order)."""
        b, n, h, w, c = self.images.shape
        return [self.images.reshape(b * n, h, w, c)]


def _where(label: str, sample: TrainingSample) -> str:
    return f"{label} episode {sample.episode_index} frame {sample.frame_index}"


def check_sample(sample: TrainingSample, embodiment: Embodiment, label: str) -> None:
    """Raise :class:`TrainingError` naming dataset, episode, frame and key when ``sample`` does not
    fit the robot YAML."""
    e = embodiment
    at = _where(label, sample)
    if sample.embodiment != e.name:
        raise TrainingError(f"{at}: sample embodiment {sample.embodiment!r} but the robot YAML is {e.name!r}")
    images = sample.observation.images
    if set(images) != set(e.camera_names):
        raise TrainingError(f"{at}: cameras {sorted(images)} but the robot YAML has {sorted(e.camera_names)}")
    for cam in e.cameras:
        img = images[cam.name]
        want = (cam.history.frames, cam.height, cam.width, 3)
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape != want:
            got = getattr(img, "shape", None), getattr(img, "dtype", type(img).__name__)
            raise TrainingError(f"{at}: camera {cam.name}: expected uint8 {want}, got {got[1]} {got[0]}")
    _check_values(
        at, "observation.state", np.asarray(sample.observation.state), (len(e.state),), e.state_names
    )
    _check_values(at, "action", np.asarray(sample.actions), (e.horizon, len(e.action)), e.action_names)
    pad = np.asarray(sample.action_is_pad)
    if pad.shape != (e.horizon,) or pad.dtype != np.bool_:
        raise TrainingError(f"{at}: action_is_pad must be bool ({e.horizon},), got {pad.dtype} {pad.shape}")
    if not sample.observation.instruction.strip():
        raise TrainingError(f"{at}: empty task (instruction)")


def _check_values(at: str, key: str, x: np.ndarray, shape: tuple[int, ...], names: tuple[str, ...]) -> None:
    if x.shape != shape:
        raise TrainingError(f"{at}: {key} has shape {x.shape}, the robot YAML needs {shape}")
    bad = ~np.isfinite(x)
    if bad.any():
        channels = sorted({names[i] for i in np.flatnonzero(bad.reshape(-1, len(names)).any(axis=0))})
        first = x[bad][0]
        raise TrainingError(f"{at}: {key} has non-finite values ({first}) in channels {channels}")


def to_record(sample: TrainingSample, embodiment: Embodiment, size: tuple[int, int], label: str) -> Record:
    """Check ``sample`` and resize its images to ``size`` (height, width)."""
    check_sample(sample, embodiment, label)
    frames = [
        resize_images(torch.from_numpy(np.ascontiguousarray(sample.observation.images[name])), *size)
        for name in embodiment.camera_names
    ]
    return Record(
        images=torch.cat(frames).numpy(),
        state=np.asarray(sample.observation.state, dtype=np.float32),
        actions=np.asarray(sample.actions, dtype=np.float32),
        action_is_pad=np.asarray(sample.action_is_pad, dtype=np.bool_),
        instruction=sample.observation.instruction,
        episode=int(sample.episode_index),
        frame=int(sample.frame_index),
    )


class FrameSet(torch.utils.data.Dataset[Record]):
    """The frames of one dataset (one embodiment) as the trainer sees them."""

    def __init__(self, label: str, embodiment: Embodiment, size: tuple[int, int]) -> None:
        self.label = label
        self.embodiment = embodiment
        self.size = size

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, row: int) -> Record:
        raise NotImplementedError

    def batch(self, rows: Sequence[int], part: int) -> TrainingBatch:
        return stack([self[r] for r in rows], rows, part, self.embodiment.name)

    def action_rows(self) -> npt.NDArray[np.float32]:
        """(N, n_action) each frame's own action (chunk row 0), for statistics."""
        return np.stack([self[r].actions[0] for r in range(len(self))])

    def frame_indices(self) -> npt.NDArray[np.int64]:
        """(N,) each row's frame index within its episode (for oversampling the start)."""
        return np.array([self[r].frame for r in range(len(self))], dtype=np.int64)


def stack(records: Sequence[Record], rows: Sequence[int], part: int, embodiment: str) -> TrainingBatch:
    return TrainingBatch(
        part=part,
        embodiment=embodiment,
        rows=torch.as_tensor(np.asarray(rows, dtype=np.int64)),
        images=torch.from_numpy(np.stack([r.images for r in records])),
        state=torch.from_numpy(np.stack([r.state for r in records])),
        actions=torch.from_numpy(np.stack([r.actions for r in records])),
        action_is_pad=torch.from_numpy(np.stack([r.action_is_pad for r in records])),
        instructions=[r.instruction for r in records],
        episode=torch.tensor([r.episode for r in records], dtype=torch.int64),
        frame=torch.tensor([r.frame for r in records], dtype=torch.int64),
    )


class StreamFrames(FrameSet):
    """Samples read from the dataset on demand."""

    def __init__(
        self, source: SampleSource, label: str, embodiment: Embodiment, size: tuple[int, int]
    ) -> None:
        super().__init__(label, embodiment, size)
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, row: int) -> Record:
        return to_record(self.source[row], self.embodiment, self.size, self.label)


class CachedFrames(FrameSet):
    """Every frame read once into memory-mapped arrays under ``directory``."""

    FIELDS = ("images", "state", "actions", "action_is_pad", "episode", "frame", "task")

    def __init__(self, directory: Path, label: str, embodiment: Embodiment, size: tuple[int, int]) -> None:
        super().__init__(label, embodiment, size)
        self.directory = directory
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            self.tasks: list[str] = list(meta["tasks"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{directory / 'meta.json'}: {type(exc).__name__}: {exc}") from exc
        self.arrays: dict[str, np.ndarray] = {}
        for name in self.FIELDS:
            try:
                self.arrays[name] = np.load(directory / f"{name}.npy", mmap_mode="r")
            except (OSError, ValueError, EOFError) as exc:  # missing, cut short, empty
                raise ValueError(f"{directory / name}.npy: {type(exc).__name__}: {exc}") from exc

    def __len__(self) -> int:
        return int(self.arrays["state"].shape[0])

    def __getitem__(self, row: int) -> Record:
        a = self.arrays
        return Record(
            images=np.asarray(a["images"][row]),
            state=np.asarray(a["state"][row]),
            actions=np.asarray(a["actions"][row]),
            action_is_pad=np.asarray(a["action_is_pad"][row]),
            instruction=self.tasks[int(a["task"][row])],
            episode=int(a["episode"][row]),
            frame=int(a["frame"][row]),
        )

    def batch(self, rows: Sequence[int], part: int) -> TrainingBatch:
        idx = np.asarray(rows, dtype=np.int64)
        a = self.arrays
        # memmap fancy indexing copies just these rows; sorted reads are sequential on disk
        order = np.argsort(idx, kind="stable")
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        sorted_idx = idx[order]

        def take(name: str) -> np.ndarray:
            return np.ascontiguousarray(a[name][sorted_idx][inverse])

        tasks = take("task")
        return TrainingBatch(
            part=part,
            embodiment=self.embodiment.name,
            rows=torch.from_numpy(idx),
            images=torch.from_numpy(take("images")),
            state=torch.from_numpy(take("state")),
            actions=torch.from_numpy(take("actions")),
            action_is_pad=torch.from_numpy(take("action_is_pad")),
            instructions=[self.tasks[int(t)] for t in tasks],
            episode=torch.from_numpy(take("episode")),
            frame=torch.from_numpy(take("frame")),
        )

    def action_rows(self) -> npt.NDArray[np.float32]:
        return np.asarray(self.arrays["actions"][:, 0], dtype=np.float32)

    def frame_indices(self) -> npt.NDArray[np.int64]:
        return np.asarray(self.arrays["frame"], dtype=np.int64)


def cache_key(
    source: SampleSource, embodiment: Embodiment, size: tuple[int, int], episodes: Sequence[int]
) -> str:
    """What the cached arrays depend on: the dataset's contents, the robot YAML, the image size."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, source.fingerprint, list(size), sorted(episodes)]).encode())
    h.update(embodiment.model_dump_json().encode())
    return h.hexdigest()[:16]


def _loader(frames: StreamFrames, workers: int) -> Iterator[Record]:
    if workers == 0:
        return (frames[i] for i in range(len(frames)))
    loader = torch.utils.data.DataLoader(
        frames, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity
    )
    return iter(loader)


def _identity(x: Any) -> Any:
    return x


def _reuse(
    frames: StreamFrames, directory: Path, key: str, shapes: dict[str, tuple[tuple[int, ...], Any]]
) -> CachedFrames | None:
    """The cache in ``directory`` if it was built for ``key`` and its arrays have the shapes a build
    would give them (a cut or replaced .npy would otherwise feed the trainer other rows)."""
    meta_file = directory / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta_file}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None  # built for another dataset, robot YAML or image size: rebuilt
        cached = CachedFrames(directory, frames.label, frames.embodiment, frames.size)
        for name, (shape, dtype) in shapes.items():
            array = cached.arrays[name]
            if array.shape != shape or array.dtype != np.dtype(dtype):
                raise ValueError(
                    f"{directory / name}.npy: {array.dtype} {array.shape}, expected {np.dtype(dtype)} {shape}"
                )
        if len(cached) and int(np.max(cached.arrays["task"])) >= len(cached.tasks):
            raise ValueError(
                f"{directory / 'task.npy'}: task numbers beyond meta.json's {len(cached.tasks)} tasks"
            )
    except ValueError as exc:
        log.warning("%s: the training frame cache is damaged (%s); rebuilding it", directory, exc)
        return None
    return cached


def build_cache(
    frames: StreamFrames, directory: Path, key: str, *, workers: int = 0, progress: bool = True
) -> CachedFrames:
    """Read every frame of ``frames`` into ``directory`` (reused when its key matches and its files
    are whole; a damaged cache is rebuilt with a warning naming the file)."""
    n = len(frames)
    e = frames.embodiment
    h, w = frames.size
    n_img = sum(c.history.frames for c in e.cameras)
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {
        "images": ((n, n_img, h, w, 3), np.uint8),
        "state": ((n, len(e.state)), np.float32),
        "actions": ((n, e.horizon, len(e.action)), np.float32),
        "action_is_pad": ((n, e.horizon), np.bool_),
        "episode": ((n,), np.int64),
        "frame": ((n,), np.int64),
        "task": ((n,), np.int32),
    }
    reused = _reuse(frames, directory, key, shapes)
    if reused is not None:
        return reused
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays = {
        k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=d, shape=s)
        for k, (s, d) in shapes.items()
    }
    tasks: dict[str, int] = {}
    from tqdm import tqdm  # type: ignore[import-untyped]

    bar = tqdm(
        _loader(frames, workers), total=n, desc=f"caching {frames.label}", unit="frame", disable=not progress
    )
    for i, rec in enumerate(bar):
        arrays["images"][i] = rec.images
        arrays["state"][i] = rec.state
        arrays["actions"][i] = rec.actions
        arrays["action_is_pad"][i] = rec.action_is_pad
        arrays["episode"][i] = rec.episode
        arrays["frame"][i] = rec.frame
        arrays["task"][i] = tasks.setdefault(rec.instruction, len(tasks))
    for arr in arrays.values():
        arr.flush()
    del arrays
    meta = {"key": key, "format": CACHE_FORMAT, "frames": n, "tasks": list(tasks), "size": [h, w]}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return CachedFrames(directory, frames.label, frames.embodiment, frames.size)


class FramePool(torch.utils.data.Dataset[TrainingBatch]):
    """Several frame sets (one per dataset) behind one DataLoader: a batch is a list of
    ``(part, row)`` pairs, all of one part (see :class:`~qvla_core.training.sampler.StepSampler`)."""

    def __init__(self, parts: Sequence[FrameSet]) -> None:
        self.parts = list(parts)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, index: Any) -> TrainingBatch:
        raise TypeError("FramePool serves whole batches (use __getitems__)")

    def __getitems__(self, items: list[tuple[int, int]]) -> TrainingBatch:
        part = items[0][0]
        return self.parts[part].batch([row for _, row in items], part)
