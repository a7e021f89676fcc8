"""LeRobotDataset refuses bad datasets with an error naming the file, the key or episode, the value."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qvla_core.data.dataset import LeRobotDataset
from qvla_core.data.format import DatasetError
from qvla_core.data.writer import DatasetWriter
from qvla_core.embodiment import Embodiment

from .synthetic_dataset import CAMERAS, NAMES, embodiment, write_dataset

DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
VIDEO = "videos/observation.images.cam_low/chunk-000/file-000.mp4"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", lengths=(10, 12)).root


@pytest.fixture
def ds(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ds"
    shutil.copytree(pristine, copy)
    return copy


def edit_info(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    change(info)
    path.write_text(json.dumps(info))


def refused(root: Path, robot: Embodiment, pattern: str) -> str:
    with pytest.raises(DatasetError, match=pattern) as err:
        LeRobotDataset(root, robot)
    return str(err.value)


def test_info_lying_about_the_state_width(ds: Path) -> None:
    def lie(info: dict[str, Any]) -> None:
        info["features"]["observation.state"].update(shape=[13], names=list(NAMES[:13]))

    edit_info(ds, lie)
    robot = embodiment(channels=NAMES[:13])
    robot = robot.model_copy(update={"action": embodiment().action})  # actions still 14
    msg = refused(ds, robot, r"features.observation.state.shape: says \[13\] but .*file-000.parquet has 14")
    assert "info.json" in msg


def test_info_lying_about_the_camera_size(ds: Path) -> None:
    edit_info(ds, lambda info: info["features"]["observation.images.cam_low"].update(shape=[96, 128, 3]))
    robot = embodiment({"cam_high": (48, 64), "cam_low": (96, 128)})
    refused(
        ds, robot, r"info.json: features.observation.images.cam_low.shape: says 96x128, but .*mp4 is 48x64"
    )


def test_info_lying_about_fps(ds: Path) -> None:
    edit_info(ds, lambda info: info.update(fps=30))
    refused(
        ds,
        embodiment(rate=30.0),
        r"info.json: fps: says 30, but episode 0 .* 0.0200 s apart \(expected 0.0333 s\)",
    )


def test_fps_against_the_robot_yaml(ds: Path) -> None:
    refused(ds, embodiment(rate=30.0), r"info.json: fps: 50, but the robot YAML's control_rate_hz is 30")


def test_features_against_the_robot_yaml(ds: Path) -> None:
    renamed = ["x" + n for n in NAMES]
    refused(
        ds,
        embodiment(channels=renamed),
        r"features.observation.state.names: \['left_waist'.*robot YAML's state",
    )
    refused(ds, embodiment({"cam_high": (48, 64), "cam_low": (96, 128)}), r"camera 'cam_low' is 96x128")
    refused(
        ds,
        embodiment({"cam_high": (48, 64), "wrist": (48, 64)}),
        r"camera 'wrist' has no 'observation.images.wrist'",
    )
    with pytest.raises(DatasetError, match=r"camera_map: 'nope' is not a camera of the dataset"):
        LeRobotDataset(ds, embodiment(), camera_map={"nope": "cam_high"})
    with pytest.raises(DatasetError, match=r"camera_map: 'cam_low' -> 'side', but the robot YAML's cameras"):
        LeRobotDataset(ds, embodiment(), camera_map={"cam_low": "side"})


@pytest.mark.parametrize(
    ("remove", "pattern"),
    [
        (VIDEO, r"file-000.mp4: missing video file"),
        (DATA, r"data/chunk-000/file-000.parquet: missing"),
        ("meta/tasks.parquet", r"meta/tasks.parquet: missing \(not a complete"),
        ("meta/info.json", r"meta/info.json: missing \(not a complete"),
        ("meta/episodes", r"meta/episodes: no episodes parquet file"),
    ],
)
def test_missing_files(ds: Path, remove: str, pattern: str) -> None:
    target = ds / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    refused(ds, embodiment(), pattern)


def test_staging_directory_and_no_directory(tmp_path: Path) -> None:
    writer = DatasetWriter(
        tmp_path / "ds", fps=50, robot_type="aloha", state_names=NAMES, action_names=NAMES, cameras=CAMERAS
    )
    writer.add_frame(
        state=np.zeros(14, np.float32),
        action=np.zeros(14, np.float32),
        images={c: np.zeros((*s, 3), np.uint8) for c, s in CAMERAS.items()},
        timestamp=0.0,
    )
    writer.save_episode("half done")
    refused(writer.staging, embodiment(), r"a half-written dataset \(QVLA_STAGING present")
    refused(tmp_path / "ds", embodiment(), r"ds: not a directory")
    writer.abort()


def test_corrupt_parquet(ds: Path) -> None:
    path = ds / DATA
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    refused(ds, embodiment(), r"data/chunk-000/file-000.parquet: not a readable parquet file")
    (ds / EPISODES).write_bytes(b"not parquet at all")
    refused(ds, embodiment(), r"meta/episodes/chunk-000/file-000.parquet: not a readable parquet file")


def test_video_shorter_than_the_data(ds: Path, tmp_path: Path) -> None:
    short = write_dataset(tmp_path / "short", lengths=(10, 8)).root
    shutil.copy(short / VIDEO, ds / VIDEO)
    refused(
        ds,
        embodiment(),
        r"cam_low/chunk-000/file-000.mp4: has 18 frames, but episode 1 needs frames up to 21",
    )


def test_episode_rows_disagreeing_with_the_data(ds: Path) -> None:
    table = pq.read_table(ds / EPISODES)
    lengths = table.column("length").to_pylist()
    table = table.set_column(table.schema.get_field_index("length"), "length", pa.array([lengths[0], 11]))
    to_index = table.column("dataset_to_index").to_pylist()
    table = table.set_column(
        table.schema.get_field_index("dataset_to_index"), "dataset_to_index", pa.array([to_index[0], 21])
    )
    pq.write_table(table, ds / EPISODES)
    refused(ds, embodiment(), r"info.json: total_frames: says 22, but meta/episodes has 21")
    edit_info(ds, lambda info: info.update(total_frames=21))
    refused(
        ds,
        embodiment(),
        r"file-000.parquet: has 22 rows, but meta/episodes puts 21 frames of episodes \[0, 1\]",
    )


def test_empty_dataset(ds: Path) -> None:
    table = pq.read_table(ds / EPISODES)
    pq.write_table(table.slice(0, 0), ds / EPISODES)
    refused(ds, embodiment(), r"meta/episodes: no episodes \(an empty dataset\)")


def test_nan_in_state_names_episode_frame_and_channel(ds: Path) -> None:
    table = pq.read_table(ds / DATA)
    state = np.array(table.column("observation.state").to_pylist(), np.float32)
    state[10 + 5, 3] = np.nan  # episode 1, frame 5, left_forearm_roll
    column = pa.FixedSizeListArray.from_arrays(pa.array(state.ravel(), pa.float32()), 14)
    pq.write_table(table.set_column(0, "observation.state", column), ds / DATA)
    refused(ds, embodiment(), r"episode 1 frame 5: observation.state channel left_forearm_roll is nan")


def test_older_format_is_named(ds: Path) -> None:
    edit_info(ds, lambda info: info.update(codebase_version="v2.1"))
    refused(ds, embodiment(), r"codebase_version: expected 'v3.0' \(got 'v2.1'\).*convert_dataset_v21_to_v30")


def test_stats_json_with_wrong_widths(ds: Path) -> None:
    path = ds / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats["action"]["q01"] = stats["action"]["q01"][:5]
    path.write_text(json.dumps(stats))
    refused(
        ds,
        embodiment(),
        r"stats.json: action.q01: expected a list of 14 numbers \(one per channel\), got 5 values",
    )


def test_cameras_stored_as_images_are_named(ds: Path) -> None:
    edit_info(ds, lambda info: info["features"]["observation.images.cam_low"].update(dtype="image"))
    refused(
        ds,
        embodiment(),
        r"features.observation.images.cam_low: the robot YAML's camera 'cam_low' is stored as images",
    )
