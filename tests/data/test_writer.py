"""DatasetWriter: the files it writes match LeRobot's v3.0 layout, and bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from qvla_core.data import format as fmt
from qvla_core.data.format import DatasetError
from qvla_core.data.video import decode, probe
from qvla_core.data.writer import DatasetWriter

from .synthetic_dataset import CAMERAS, NAMES, frame_image, write_dataset

# The episode columns LeRobot's writer produces (besides stats/...), in v3.0.
EPISODE_COLUMNS = [
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
]
STATS = ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]


def make_writer(root: Path, **kw: object) -> DatasetWriter:
    args: dict[str, object] = {
        "fps": 50.0,
        "robot_type": "aloha",
        "state_names": NAMES,
        "action_names": NAMES,
        "cameras": CAMERAS,
    }
    args.update(kw)
    return DatasetWriter(root, **args)  # type: ignore[arg-type]


def frame(k: int = 0, **over: object) -> dict[str, object]:
    values: dict[str, object] = {
        "state": np.zeros(14, np.float32),
        "action": np.zeros(14, np.float32),
        "images": {c: frame_image(0, k, i, s) for i, (c, s) in enumerate(CAMERAS.items())},
        "timestamp": 5.0 + k / 50.0,
    }
    values.update(over)
    return values


def test_layout_and_metadata_follow_lerobot_v30(tmp_path: Path) -> None:
    w = write_dataset(tmp_path / "ds", lengths=(30, 41))
    root = w.root
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "videos/observation.images.cam_high/chunk-000/file-000.mp4",
        "videos/observation.images.cam_low/chunk-000/file-000.mp4",
    ]
    assert not list(tmp_path.glob(".ds.staging-*"))
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert (info["fps"], info["robot_type"], info["total_episodes"], info["total_frames"]) == (
        50,
        "aloha",
        2,
        71,
    )
    assert info["total_tasks"] == 2 and info["splits"] == {"train": "0:2"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [14], "names": list(NAMES)}
    assert feats["action"]["shape"] == [14]
    cam = feats["observation.images.cam_high"]
    assert (cam["dtype"], cam["shape"], cam["names"]) == (
        "video",
        [48, 64, 3],
        ["height", "width", "channels"],
    )
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.pix_fmt"] == "yuv420p"
    assert (cam["info"]["video.height"], cam["info"]["video.width"], cam["info"]["video.fps"]) == (48, 64, 50)
    for key in fmt.INDEX_KEYS:
        assert feats[key]["shape"] == [1]

    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.column_names == ["observation.state", "action", *fmt.INDEX_KEYS]
    assert (
        str(data.schema.field("observation.state").type) == "fixed_size_list<element: float>[14]"
    )  # as LeRobot writes it
    assert data.column("index").to_pylist() == list(range(71))
    assert data.column("frame_index").to_pylist() == list(range(30)) + list(range(41))
    assert data.column("episode_index").to_pylist() == [0] * 30 + [1] * 41
    assert data.column("task_index").to_pylist() == [0] * 30 + [1] * 41
    ts = np.array(data.column("timestamp").to_pylist())
    np.testing.assert_allclose(ts[30:], np.arange(41) / 50.0, atol=1e-5)  # from 0 in each episode
    np.testing.assert_array_equal(np.array(data.column("action").to_pylist()[30:]), w.actions[1])

    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for col in EPISODE_COLUMNS:
        assert col in episodes[0]
    for stat in STATS:
        assert f"stats/observation.state/{stat}" in episodes[0]
        assert f"stats/observation.images.cam_low/{stat}" in episodes[0]
    e1 = episodes[1]
    assert (e1["episode_index"], e1["tasks"], e1["length"]) == (1, ["hand the cube over"], 41)
    assert (e1["dataset_from_index"], e1["dataset_to_index"]) == (30, 71)
    v = "videos/observation.images.cam_high"
    assert (e1[f"{v}/chunk_index"], e1[f"{v}/file_index"]) == (0, 0)
    assert e1[f"{v}/from_timestamp"] == pytest.approx(30 / 50) and e1[f"{v}/to_timestamp"] == pytest.approx(
        71 / 50
    )
    assert [e["qvla/success"] for e in episodes] == [True, False]
    assert json.loads(e1["qvla/metadata"]) == {"seed": 1001}

    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["transfer the cube", "hand the cube over"]
    assert tasks.column("task_index").to_pylist() == [0, 1]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]


def test_stats_are_right(tmp_path: Path) -> None:
    w = write_dataset(tmp_path / "ds", lengths=(30, 41))
    stats = json.loads((w.root / "meta/stats.json").read_text())
    allstate = np.concatenate(w.states).astype(np.float64)
    s = stats["observation.state"]
    np.testing.assert_allclose(s["min"], allstate.min(0), rtol=1e-6)
    np.testing.assert_allclose(s["max"], allstate.max(0), rtol=1e-6)
    np.testing.assert_allclose(s["mean"], allstate.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s["std"], allstate.std(0), rtol=1e-5)
    assert s["count"] == [71]
    # Quantiles combine as LeRobot's do (count-weighted per-episode quantiles): close, not exact.
    np.testing.assert_allclose(s["q50"], np.quantile(allstate, 0.5, axis=0), atol=0.25)
    episodes = pq.read_table(w.root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    np.testing.assert_allclose(
        episodes[1]["stats/action/q99"], np.quantile(w.actions[1].astype(np.float64), 0.99, axis=0), rtol=1e-6
    )
    img = stats["observation.images.cam_high"]
    pixels = np.stack([w.image(e, k, "cam_high") for e, n in enumerate((30, 41)) for k in range(n)])
    assert np.array(img["mean"]).shape == (3, 1, 1) and img["count"] == [71]
    np.testing.assert_allclose(np.array(img["mean"]).ravel(), pixels.mean((0, 1, 2)) / 255, atol=1e-9)
    np.testing.assert_allclose(np.array(img["std"]).ravel(), pixels.std((0, 1, 2)) / 255, atol=1e-9)
    np.testing.assert_allclose(np.array(img["max"]).ravel(), pixels.max((0, 1, 2)) / 255)
    assert stats["frame_index"]["max"] == [40] and stats["episode_index"]["mean"] == pytest.approx([41 / 71])


def test_video_holds_every_frame_in_order(tmp_path: Path) -> None:
    w = write_dataset(tmp_path / "ds", lengths=(12, 9))
    path = w.root / "videos/observation.images.cam_low/chunk-000/file-000.mp4"
    p = probe(path)
    assert (p.frames, p.width, p.height, p.fps) == (21, 64, 48, 50.0)
    frames = list(decode(path, 50.0, 12, 21))  # the second episode, by seeking
    assert len(frames) == 9
    errors = [np.abs(f.astype(int) - w.image(1, k, "cam_low")).mean() for k, f in enumerate(frames)]
    shifted = [np.abs(f.astype(int) - w.image(1, k + 1, "cam_low")).mean() for k, f in enumerate(frames)]
    # yuv420p halves the chroma resolution: ~3 grey levels on these tiny frames; a frame off by one
    # is ~10 away.
    assert max(errors) < 5.0 and max(errors) < 0.6 * min(shifted)


def test_leaving_with_an_exception_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError), make_writer(root) as writer:
        writer.add_frame(**frame(0))  # type: ignore[arg-type]
        writer.save_episode("a task")
        raise RuntimeError("conversion interrupted")
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []


def test_staging_directory_is_marked_until_finalize(tmp_path: Path) -> None:
    writer = make_writer(tmp_path / "ds")
    writer.add_frame(**frame(0))  # type: ignore[arg-type]
    writer.save_episode("a task")
    assert not (tmp_path / "ds").exists()
    assert (writer.staging / fmt.STAGING_MARKER).is_file()
    assert not (writer.staging / fmt.INFO_PATH).exists()
    writer.finalize()
    assert (tmp_path / "ds" / fmt.INFO_PATH).is_file()
    assert not (tmp_path / "ds" / fmt.STAGING_MARKER).exists()


def test_discarded_episode_is_not_written(tmp_path: Path) -> None:
    with make_writer(tmp_path / "ds") as writer:
        for k in range(3):
            writer.add_frame(**frame(k))  # type: ignore[arg-type]
        writer.discard_episode()
        for k in range(2):
            writer.add_frame(**frame(k))  # type: ignore[arg-type]
        assert writer.save_episode("kept") == 0
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert (info["total_episodes"], info["total_frames"]) == (1, 2)


def test_existing_root_needs_overwrite(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", lengths=(3,))
    with pytest.raises(DatasetError, match="already exists"):
        make_writer(tmp_path / "ds")
    write_dataset_again = make_writer(tmp_path / "ds", overwrite=True)
    for k in range(4):
        write_dataset_again.add_frame(**frame(k))  # type: ignore[arg-type]
    write_dataset_again.save_episode("new")
    write_dataset_again.finalize()
    assert json.loads((tmp_path / "ds/meta/info.json").read_text())["total_frames"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        (
            {"state": np.array([0.0] * 13 + [np.nan], np.float32)},
            r"episode 0 frame 0: state: .*right_gripper=nan",
        ),
        ({"action": np.zeros(13, np.float32)}, r"action: expected 14 values"),
        ({"images": {"cam_high": np.zeros((48, 64, 3), np.uint8)}}, r"images for cameras \['cam_high'\]"),
        (
            {
                "images": {
                    "cam_high": np.zeros((48, 64, 3), np.uint8),
                    "cam_low": np.zeros((64, 48, 3), np.uint8),
                }
            },
            r"camera cam_low: expected uint8 \(48, 64, 3\)",
        ),
        ({"timestamp": float("nan")}, r"timestamp is not finite"),
    ],
)
def test_bad_frames_are_refused(tmp_path: Path, over: dict[str, object], message: str) -> None:
    with make_writer(tmp_path / "ds") as writer:
        with pytest.raises(DatasetError, match=message):
            writer.add_frame(**frame(0, **over))  # type: ignore[arg-type]
        writer.add_frame(**frame(0))  # type: ignore[arg-type]
        writer.save_episode("still fine")


def test_timestamps_must_follow_the_fps_grid(tmp_path: Path) -> None:
    writer = make_writer(tmp_path / "ds")
    writer.add_frame(**frame(0))  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match=r"episode 0 frame 1: timestamp 5.040000 s is off the 50 fps grid"):
        writer.add_frame(**frame(1, timestamp=5.04))  # type: ignore[arg-type]
    writer.abort()


def test_empty_episode_and_empty_dataset_are_refused(tmp_path: Path) -> None:
    writer = make_writer(tmp_path / "ds")
    with pytest.raises(DatasetError, match="episode 0: no frames"):
        writer.save_episode("nothing")
    with pytest.raises(DatasetError, match="no episodes were saved"):
        writer.finalize()
    assert list(tmp_path.iterdir()) == []


def test_unsaved_frames_block_finalize(tmp_path: Path) -> None:
    writer = make_writer(tmp_path / "ds")
    writer.add_frame(**frame(0))  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="episode 0 has 1 unsaved frames"):
        writer.finalize()
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_bad_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="state names repeat"):
        make_writer(tmp_path / "a", state_names=["a", "a"])
    with pytest.raises(DatasetError, match="fps must be a positive number"):
        make_writer(tmp_path / "b", fps=0.0)
    with pytest.raises(DatasetError, match=r"camera top: size must be"):
        make_writer(tmp_path / "c", cameras={"top": (47, 64)})
    with pytest.raises(DatasetError, match="camera name 'a/b'"):
        make_writer(tmp_path / "d", cameras={"a/b": (48, 64)})
    assert list(tmp_path.iterdir()) == []
