"""Damaged recordings and datasets end in a clear error naming the file and the defect (a subset
of each damage kind of bench/data_fuzz.py, which runs them all), or are left out with a warning
where --skip-bad says so; and regression tests of the reader fixes the fuzz led to."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from qvla_core.data.dataset import LeRobotDataset
from qvla_core.data.format import DatasetError

from . import fuzz_dataset_cases as dc

DATASET_CASES = {
    # name in fuzz_dataset_cases -> what the message must say (a regex)
    "NaN in an action": r"episode 0 frame 4: action channel left_elbow is nan",
    "-inf in a state": r"episode 1 frame 11: observation.state channel left_wrist_rotate is -inf",
    "a null action row": r"column action: row 6 is null",
    "a null inside an action": r"column action: a row holds a null value",
    "state as lists of strings": r"column observation.state: expected numbers",
    "state 13 wide": r"says \[14\] but .* has 13 values per row",
    "timestamps as strings": r"column timestamp: expected numbers",
    "NaN timestamp": r"column timestamp: row 5 is nan",
    "a null index": r"column index: 1 null value",
    "one row missing": r"has 21 rows, but meta/episodes puts 22",
    "a null length": r"episode 1: column length: expected a number, got None",
    "video from_timestamp NaN": r"from_timestamp: expected a number, got nan",
    "video from/to of episode 1 one frame early": r"episodes 0 and 1 overlap in .*file-000.mp4",
    "video to_timestamp beyond the video": r"is \d+\.\d frames at 50 fps, but the episode has 12",
    "tasks of episode 1 empty": r"column tasks: expected a non-empty list",
    "video file_index -> 2 (no such file)": r"file-002.mp4: missing video file \(.*parquet puts episode 1",
    "task 1 missing": r"total_tasks: says 2, but meta/tasks.parquet has 1",
    "chunks_size a string": r"chunks_size: must be a positive integer",
    "data_path with an unknown placeholder": r"data_path: .* is not a path template",
    "total_frames one short": r"total_frames: says 21, but meta/episodes has 22",
    "action q01 NaN": r"stats.json: action.q01: not finite",
    "state min strings": r"stats.json: observation.state.min: expected numbers",
    "action q01 above q99": r"stats.json: action: channel .* has q01 .* above q10",
    "state stats from other data (x10)": r"observation.state.min: channel .* do not describe this dataset",
    "zero bytes": r"not a readable",
    "21 frames for 22 data rows": r"has 21 frames, but episode 1 needs frames up to 21",
    "96x128 instead of 48x64": r"says 48x64, but .*file-000.mp4 is 96x128",
    "index first (faststart), cut to 50%": r"file-000.mp4: truncated: the MP4 box 'mdat'",
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return dc.make_dataset(tmp_path_factory.mktemp("fuzz") / "ds")


def _case(name: str, kinds: tuple[str, ...] = ()) -> dc.Case:
    found = [c for c in dc.all_cases() if c.name == name and (not kinds or c.kind in kinds)]
    assert found, f"no fuzz case {name!r}"
    return found[0]


@pytest.mark.parametrize("name", sorted(DATASET_CASES))
def test_a_damaged_dataset_is_refused_naming_the_file(name: str, pristine: Path, tmp_path: Path) -> None:
    case = _case(name, ("video (MP4)",) if name == "zero bytes" else ())
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    case.damage(root)
    with pytest.raises(DatasetError, match=DATASET_CASES[name]) as err:
        LeRobotDataset(root, dc.robot())
    assert any(n in str(err.value) for n in case.mentions()), str(err.value)


def test_the_pristine_dataset_loads(pristine: Path) -> None:
    ds = LeRobotDataset(pristine, dc.robot())
    assert len(ds) == sum(dc.LENGTHS) and ds[len(ds) - 1].episode_index == 1


def test_stats_json_missing_is_computed_with_a_warning(
    pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    (root / dc.STATS).unlink()
    with caplog.at_level(logging.WARNING, logger="qvla"):
        ds = LeRobotDataset(root, dc.robot())
    assert f"{root / dc.STATS}: no action statistics; computing them from the data" in caplog.text
    assert ds.stats["action"]["min"] == pytest.approx(
        LeRobotDataset(pristine, dc.robot()).stats["action"]["min"]
    )


def test_nan_in_actions_never_reaches_a_training_batch(pristine: Path, tmp_path: Path) -> None:
    """qvla-train opens its datasets with this reader: the NaN stops it before any frame set exists."""
    from .fuzz_inputs import training_digest

    root = tmp_path / "ds"
    shutil.copytree(pristine, root)
    _case("NaN in an action").damage(root)
    with pytest.raises(DatasetError, match=r"file-000.parquet: episode 0 frame 4: action"):
        training_digest(root, dc.robot(), tmp_path / "work")


# ----------------------------------------------------------------------------- recordings
@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(
        "ament_index_python", reason="the .msg definitions need the ROS env: source scripts/env.sh"
    )
    from . import fuzz_mcap_cases as mc

    return mc.make_bags(tmp_path_factory.mktemp("fuzz") / "bags")


MCAP_CASES = {
    # (kind prefix, name fragment) -> what the message must say
    ("MCAP truncated (uncompressed)", "cut to 66678 of"): r"truncated or corrupt",
    ("MCAP truncated (LZ4)", "cut to 30073 of"): r"truncated or corrupt",
    ("MCAP truncated (Zstd)", " of "): r"truncated or corrupt",
    ("MCAP bit flip in a chunk (uncompressed)", "payload 3/8"): r"CRCValidationError",
    ("MCAP bit flip in a chunk (LZ4)", "payload 3/8"): r"truncated or corrupt",
    ("MCAP bit flip in a chunk (Zstd)", "payload 3/8"): r"truncated or corrupt",
    ("MCAP bit flip outside chunks (uncompressed)", "of the statistics"): r"summary section fails its CRC",
    ("MCAP bit flip outside chunks (LZ4)", "of the attachment ("): r"attachment at byte \d+ fails its CRC",
    ("MCAP bit flip outside chunks (uncompressed)", "metadata start_ns"): r"start_ns must be a non-negative",
    ("bag directory / metadata.yaml", "lists one of the two split"): r"does not list \['ros2_1.mcap'\]",
    ("bag directory / metadata.yaml", "binary garbage"): r"not a rosbag2 metadata file",
    ("bag directory / metadata.yaml", "relative_file_paths a string"): r"expected a list of file names",
}


def _convert(root: Path, target: str, skip_bad: bool, out: Path) -> object:
    from qvla_core.data.convert import convert
    from qvla_core.data.mcap_reader import find_bags

    from .fuzz_inputs import TASK

    if target.startswith("ros2"):
        found = find_bags([root / "ros2"], skip_bad=skip_bad)
        return convert(
            found, out, robot_config=root / "robot.yaml", task=TASK, skip_bad=skip_bad, progress=False
        )
    return convert(find_bags([root / "rec"], skip_bad=skip_bad), out, skip_bad=skip_bad, progress=False)


@pytest.mark.parametrize(("kind", "fragment"), sorted(MCAP_CASES))
def test_a_damaged_recording_is_refused_naming_the_file(
    kind: str, fragment: str, bags: Path, tmp_path: Path
) -> None:
    from qvla_core.data.mcap_reader import RecordingError

    from . import fuzz_mcap_cases as mc

    case = next(c for c in mc.all_cases(bags) if c.kind == kind and fragment in c.name)
    root = tmp_path / "bags"
    shutil.copytree(bags, root)
    case.damage(root / case.target)
    with pytest.raises(RecordingError, match=MCAP_CASES[(kind, fragment)]) as err:
        _convert(root, case.target, False, tmp_path / "ds")
    assert any(n in str(err.value) for n in case.mentions()), str(err.value)
    assert not (tmp_path / "ds").exists()


def test_skip_bad_leaves_out_a_truncated_bag_and_lists_it(bags: Path, tmp_path: Path) -> None:
    from . import fuzz_mcap_cases as mc

    root = tmp_path / "bags"
    shutil.copytree(bags, root)
    mcap = root / mc.OURS
    mcap.write_bytes(mcap.read_bytes()[:5000])
    report = _convert(root, mc.OURS, True, tmp_path / "ds")
    skipped = [e for e in report.episodes if e.skipped]  # type: ignore[attr-defined]
    assert (
        len(skipped) == 1 and str(mcap) in skipped[0].skipped and "truncated or corrupt" in skipped[0].skipped
    )
    ds = LeRobotDataset(tmp_path / "ds", LeRobotDataset.__init__ and _robot_of(root))
    assert ds.episodes == (0,) and ds[0].observation.instruction == "transfer the cube 1"


def _robot_of(root: Path) -> object:
    from qvla_core.data.convert import robot_config_for
    from qvla_core.data.mcap_reader import find_bags

    return robot_config_for(find_bags([root / "rec/episode_000001"]), None).embodiment


def test_the_data_section_crc_is_checked_where_the_writer_stored_one(tmp_path: Path) -> None:
    """MCAP has no CRC on metadata records except the data section's (off by default in writers):
    where it is there, a flipped bit in the episode record is caught."""
    from mcap.writer import Writer

    from qvla_core.data.mcap_reader import Bag, RecordingError

    path = tmp_path / "one.mcap"
    with path.open("wb") as f:
        w = Writer(f, enable_data_crcs=True)
        w.start("ros2", "test")
        w.add_metadata("qvla_episode", {"task": "transfer the cube", "start_ns": "200000000"})
        w.finish()
    Bag(path)  # intact: opens
    data = bytearray(path.read_bytes())
    data[data.find(b"transfer") + 2] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"{path}: the data section fails its CRC check"):
        Bag(path)
