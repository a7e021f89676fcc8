"""From samples to batches: the seeded sampler (resumable, one embodiment per batch), cached and
streamed frames giving the same batches, images resized as the processor does, norm stats from the
dataset with never-moving channels widened, episode splits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import TrainingError
from qvla_core.model.processor import images_to_patches, resize_images
from qvla_core.training.config import Data, Validation
from qvla_core.training.datasets import DatasetSpec, frame_set, split_episodes
from qvla_core.training.frames import FramePool
from qvla_core.training.sampler import StepSampler
from qvla_core.training.stats import norm_stats_from_source
from qvla_core.training.synthetic import SyntheticSource


def test_sampler_is_seeded_resumable_and_covers_each_epoch() -> None:
    full = list(StepSampler([10, 30], batch_size=4, seed=3, start=0, stop=40))
    assert full == list(StepSampler([10, 30], batch_size=4, seed=3, start=0, stop=40))
    assert full != list(StepSampler([10, 30], batch_size=4, seed=4, start=0, stop=40))
    assert list(StepSampler([10, 30], batch_size=4, seed=3, start=25, stop=40)) == full[25:]
    for batch in full:
        assert len({part for part, _ in batch}) == 1 and len(batch) == 4
    parts = [batch[0][0] for batch in full]
    assert 0 < parts.count(0) < parts.count(1)  # chosen in proportion to size
    rows = [row for batch in full if batch[0][0] == 1 for _, row in batch]
    assert sorted(rows[:30]) == list(range(30))  # the first epoch of part 1 visits each frame once


def test_cached_and_streamed_frames_give_the_same_batches(tmp_path: Path, toy: Embodiment) -> None:
    source = SyntheticSource(toy, episodes=2, frames=6)
    spec = DatasetSpec(source, toy, "toy")
    size = (32, 32)
    stream = frame_set(source, spec, source.episodes, size, Data(frame_cache=False), tmp_path, "train", False)
    cached = frame_set(source, spec, source.episodes, size, Data(), tmp_path, "train", False)
    again = frame_set(source, spec, source.episodes, size, Data(), tmp_path, "train", False)  # reused
    assert len(stream) == len(cached) == 12 and again.directory == cached.directory  # type: ignore[attr-defined]
    rows = [7, 0, 11, 3]
    a, b = stream.batch(rows, 0), cached.batch(rows, 0)
    for name in ("images", "state", "actions", "action_is_pad", "episode", "frame", "rows"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.instructions == b.instructions == [source.instruction] * 4
    assert a.images.shape == (4, 1, 32, 32, 3)
    # the last frame of an episode pads its chunk with the last action
    last = cached.batch([5], 0)
    assert last.action_is_pad[0].tolist() == [False, True, True, True]
    # images: the processor's own resize, so it skips that step later with the same result
    sample = source[7]
    raw = torch.from_numpy(sample.observation.images["top"])
    assert torch.equal(b.images[0, 0], resize_images(raw, 32, 32)[0])
    pool = FramePool([stream, cached])
    batch = pool.__getitems__([(1, 2), (1, 4)])
    assert batch.part == 1 and batch.rows.tolist() == [2, 4]


def test_workers_give_the_same_cache(tmp_path: Path, toy: Embodiment) -> None:
    source = SyntheticSource(toy, episodes=2, frames=5)
    spec = DatasetSpec(source, toy, "toy")
    one = frame_set(source, spec, source.episodes, (32, 32), Data(), tmp_path / "a", "train", False)
    two = frame_set(source, spec, source.episodes, (32, 32), Data(workers=2), tmp_path / "b", "train", False)
    rows = list(range(len(one)))
    assert torch.equal(one.batch(rows, 0).images, two.batch(rows, 0).images)
    assert torch.equal(one.batch(rows, 0).actions, two.batch(rows, 0).actions)


def test_norm_stats_from_the_dataset_widen_channels_that_never_move(
    toy: Embodiment, caplog: pytest.LogCaptureFixture
) -> None:
    def action(state: np.ndarray) -> np.ndarray:
        return np.array([state[0], 0.25, 1.0], dtype=np.float32)  # j1 and the gripper never move

    source = SyntheticSource(toy, episodes=3, frames=10, action_fn=action)
    with caplog.at_level(logging.INFO, logger="qvla.train"):
        stats = norm_stats_from_source(source, toy, "toy")
    a = stats.action
    assert a.mode == "quantile" and a.q01 is not None and a.q99 is not None
    assert a.q01[0] == pytest.approx(source.stats["action"]["q01"][0])
    assert a.q01[1] == pytest.approx(0.25 - 0.02) and a.q99[1] == pytest.approx(0.25 + 0.02)  # ±1% of 2 rad
    assert a.q01[2] == pytest.approx(0.99) and a.q99[2] == pytest.approx(1.01)
    text = caplog.text
    assert "toy action channel j1 never moves" in text and "toy action channel gripper never moves" in text
    assert "channel j0" not in text


def test_norm_stats_errors_name_dataset_and_key(toy: Embodiment) -> None:
    class Bad(SyntheticSource):
        @property
        def stats(self) -> dict[str, dict[str, list[float]]]:
            s = super().stats
            s["action"]["q99"] = s["action"]["q99"][:2]
            return s

    with pytest.raises(
        TrainingError, match=r"data/x: stats 'action\.q99' have 2 values but the robot YAML has 3"
    ):
        norm_stats_from_source(Bad(toy, episodes=1, frames=3), toy, "data/x")


def test_episode_split() -> None:
    train, val = split_episodes(range(6), Validation(episodes=2), seed=0, label="d")
    assert len(val) == 2 and sorted(train + val) == list(range(6))
    assert split_episodes(range(6), Validation(episodes=2), seed=0, label="d") == (train, val)
    assert split_episodes(range(6), Validation(episodes=[5, 1]), 0, "d") == ([0, 2, 3, 4], [1, 5])
    assert split_episodes(range(3), Validation(episodes=0), 0, "d") == ([0, 1, 2], [])
    with pytest.raises(TrainingError, match=r"d: validation\.episodes = 3 but the dataset has only 3"):
        split_episodes(range(3), Validation(episodes=3), 0, "d")
    with pytest.raises(TrainingError, match=r"d: validation.episodes \[7\] are not in the dataset"):
        split_episodes(range(3), Validation(episodes=[7]), 0, "d")


def test_patches_of_pre_resized_images_equal_the_processors(toy: Embodiment) -> None:
    from qvla_core.model.processor import ImageSpec

    spec = ImageSpec(height=32, width=32, patch_size=16)
    raw = torch.randint(0, 256, (2, 48, 64, 3), dtype=torch.uint8)
    assert torch.equal(images_to_patches(raw, spec), images_to_patches(resize_images(raw, 32, 32), spec))
