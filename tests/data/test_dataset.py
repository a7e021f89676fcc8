"""LeRobotDataset: a dataset written by our writer reads back as the samples the policy node would
build (frame counts, exact states/actions, images after the video round trip, indexes, stats)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qvla_core.data.dataset import LeRobotDataset, history_offsets
from qvla_core.embodiment import Camera, FrameHistory
from qvla_core.runtime.frame_history import CameraHistory

from .synthetic_dataset import CAMERAS, NAMES, Written, embodiment, write_dataset

HISTORY = {"cam_high": {"frames": 3, "stride_s": 0.05}}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", lengths=(30, 41))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def test_round_trip(written: Written) -> None:
    ds = LeRobotDataset(written.root, embodiment(history=HISTORY, horizon=8))
    assert (len(ds), ds.episodes, ds.fps) == (71, (0, 1), 50.0)
    for index, (ep, k) in [(0, (0, 0)), (29, (0, 29)), (30, (1, 0)), (65, (1, 35)), (70, (1, 40))]:
        s = ds[index]
        assert (s.episode_index, s.frame_index, s.embodiment) == (ep, k, "aloha")
        np.testing.assert_array_equal(s.observation.state, written.states[ep][k])
        n = len(written.actions[ep])
        want = written.actions[ep][np.minimum(np.arange(k, k + 8), n - 1)]
        np.testing.assert_array_equal(s.actions, want)
        np.testing.assert_array_equal(s.action_is_pad, np.arange(k, k + 8) >= n)
        assert s.observation.instruction == written.tasks[ep]
        assert s.observation.stamp == pytest.approx(k / 50.0, abs=1e-5)
        assert s.observation.images["cam_low"].shape == (1, 48, 64, 3)
        assert mae(s.observation.images["cam_low"][0], written.image(ep, k, "cam_low")) < 5.0
        high = s.observation.images["cam_high"]
        assert high.shape == (3, 48, 64, 3) and high.dtype == np.uint8
        for slot, back in enumerate((5, 2, 0)):  # 0.1 s and 0.05 s back at 50 fps (a tie goes newer)
            assert mae(high[slot], written.image(ep, max(0, k - back), "cam_high")) < 5.0
    assert ds[70].action_is_pad.tolist() == [False] + [True] * 7
    assert ds[-1].frame_index == 40
    with pytest.raises(IndexError):
        ds[71]


def test_history_matches_the_policy_node() -> None:
    for frames, stride, fps in [(3, 0.05, 50.0), (4, 0.1, 30.0), (2, 0.03, 50.0), (5, 0.2, 10.0)]:
        history = FrameHistory(frames=frames, stride_s=stride)
        offsets = history_offsets(history, fps)
        camera = Camera(name="c", width=4, height=2, history=history)
        node = CameraHistory(camera)
        for k in range(40):
            node.push(np.zeros((2, 4, 3), np.uint8), k / fps)
            picked = [round(t * fps) for t in node.frame_stamps()]
            for slot, back in enumerate(offsets):
                exact = (frames - 1 - slot) * stride * fps  # frames back to the slot's target time
                if abs(exact % 1 - 0.5) < 1e-6 and k - exact > 0:
                    # A tie: the node's pick depends on float rounding; ours is the newer frame.
                    assert max(0, k - back) == max(0, k - math.floor(exact)), (frames, stride, fps, k)
                else:
                    assert picked[slot] == max(0, k - back), (frames, stride, fps, k, slot)


def test_cache_dir_gives_the_same_samples_and_is_reused(written: Written, tmp_path: Path) -> None:
    e = embodiment(history=HISTORY)
    plain = LeRobotDataset(written.root, e)
    cached = LeRobotDataset(written.root, e, cache_dir=tmp_path)
    for index in (3, 31, 70, 0):
        a, b = plain[index], cached[index]
        for cam in CAMERAS:
            np.testing.assert_array_equal(a.observation.images[cam], b.observation.images[cam])
    files = sorted(tmp_path.rglob("*.npy"))
    assert [f.relative_to(tmp_path / f"lerobot-{cached.fingerprint}").as_posix() for f in files] == [
        "observation.images.cam_high/chunk-000-file-000.npy",
        "observation.images.cam_low/chunk-000-file-000.npy",
    ]
    assert np.load(files[0], mmap_mode="r").shape == (71, 48, 64, 3)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = LeRobotDataset(written.root, e, cache_dir=tmp_path)
    again.prepare_cache()
    np.testing.assert_array_equal(
        again[12].observation.images["cam_low"], plain[12].observation.images["cam_low"]
    )
    assert [f.stat().st_mtime_ns for f in files] == stamps


def test_select_episodes_and_stats(written: Written) -> None:
    ds = LeRobotDataset(written.root, embodiment())
    held = ds.select_episodes([1])
    assert (held.episodes, len(held), held[0].episode_index) == ((1,), 41, 1)
    assert (ds.episodes, len(ds)) == ((0, 1), 71)
    only0 = LeRobotDataset(written.root, embodiment(), episodes=[0])
    assert (only0.episodes, len(only0)) == ((0,), 30)
    stats = ds.stats
    allstate = np.concatenate(written.states)
    np.testing.assert_allclose(stats["observation.state"]["min"], allstate.min(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["mean"], np.concatenate(written.actions).mean(0), rtol=1e-5)
    assert set(stats["action"]) >= {"min", "max", "mean", "std", "q01", "q99"}
    assert len(ds.fingerprint) == 16 and ds.fingerprint == only0.fingerprint
    assert ds.episode(0).success is True and ds.episode(1).metadata == {"seed": 1001}


def test_fingerprint_follows_the_files(tmp_path: Path) -> None:
    w = write_dataset(tmp_path / "ds", lengths=(4,))
    before = LeRobotDataset(w.root, embodiment()).fingerprint
    data = w.root / "data/chunk-000/file-000.parquet"
    st = data.stat()
    import os

    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert LeRobotDataset(w.root, embodiment()).fingerprint != before


def test_downloaded_layout_with_camera_map(tmp_path: Path) -> None:
    """The public ALOHA sim datasets: one camera ``observation.images.top``, names as
    ``{"motors": [...]}``, the task text as pandas' unnamed index column."""
    w = write_dataset(tmp_path / "ds", lengths=(6, 5), cameras={"top": (48, 64)})
    info_path = w.root / "meta/info.json"
    info = json.loads(info_path.read_text())
    for key in ("observation.state", "action"):
        info["features"][key]["names"] = {"motors": list(NAMES)}
    info_path.write_text(json.dumps(info))
    tasks = pq.read_table(w.root / "meta/tasks.parquet")
    pq.write_table(
        pa.table({"task_index": tasks.column("task_index"), "__index_level_0__": tasks.column("task")}),
        w.root / "meta/tasks.parquet",
    )
    robot = embodiment({"cam_high": (48, 64)})
    with pytest.raises(
        Exception, match=r"camera 'cam_high' has no 'observation.images.cam_high'.*camera_map"
    ):
        LeRobotDataset(w.root, robot)
    for key in ("top", "observation.images.top"):
        ds = LeRobotDataset(w.root, robot, camera_map={key: "cam_high"})
        s = ds[7]
        assert (s.episode_index, s.frame_index, s.observation.instruction) == (1, 1, w.tasks[1])
        assert mae(s.observation.images["cam_high"][0], w.image(1, 1, "top")) < 5.0


def test_files_roll_over_into_new_files_and_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size limits a new data / video file starts, and a new chunk directory past chunks_size."""
    from qvla_core.data import format as fmt

    monkeypatch.setattr(fmt, "DATA_FILE_SIZE_MB", 0)
    monkeypatch.setattr(fmt, "VIDEO_FILE_SIZE_MB", 0)
    monkeypatch.setattr(fmt, "CHUNKS_SIZE", 2)
    w = write_dataset(tmp_path / "ds", lengths=(5, 6, 7))
    data = sorted(p.relative_to(w.root).as_posix() for p in (w.root / "data").rglob("*.parquet"))
    assert data == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
    ]
    videos = sorted(p.relative_to(w.root / "videos").as_posix() for p in (w.root / "videos").rglob("*.mp4"))
    assert len(videos) == 6 and "observation.images.cam_low/chunk-001/file-000.mp4" in videos
    for cache in (None, tmp_path / "cache"):
        ds = LeRobotDataset(w.root, embodiment(), cache_dir=cache)
        assert len(ds) == 18
        s = ds[5 + 6 + 3]
        assert (s.episode_index, s.frame_index) == (2, 3)
        np.testing.assert_array_equal(s.observation.state, w.states[2][3])
        assert mae(s.observation.images["cam_high"][0], w.image(2, 3, "cam_high")) < 5.0


def test_pickles_for_dataloader_workers(written: Written, tmp_path: Path) -> None:
    import pickle

    for cache in (None, tmp_path):
        ds = LeRobotDataset(written.root, embodiment(), cache_dir=cache)
        first = ds[40]
        copy = pickle.loads(pickle.dumps(ds))
        again = copy[40]
        np.testing.assert_array_equal(
            first.observation.images["cam_low"], again.observation.images["cam_low"]
        )
        np.testing.assert_array_equal(first.actions, again.actions)
        assert len(pickle.dumps(ds)) < 200_000  # no decoded frames travel to the workers
