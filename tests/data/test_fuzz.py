"""Damaged recordings and datasets end in a clear error naming the file and the defect (a subset
of each damage kind of bench/data_fuzz.py, which runs them all), or are left out with a warning
where --skip-bad says so; and regression tests of the reader fixes the fuzz led to."""

from __future__ import annotations

import logging
import re
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
    # recorder_node's bags carry a data-section CRC: checked on opening, before any chunk is read
    ("MCAP bit flip in a chunk (uncompressed)", "payload 3/8"): r"the data section fails its CRC check",
    ("MCAP bit flip in a chunk (LZ4)", "payload 3/8"): r"the data section fails its CRC check",
    ("MCAP bit flip in a chunk (Zstd)", "payload 3/8"): r"truncated or corrupt",
    ("MCAP bit flip in a chunk (uncompressed, no data CRC)", "payload 3/8"): r"CRCValidationError",
    ("MCAP bit flip outside chunks (uncompressed)", "of the statistics"): r"summary section fails its CRC",
    ("MCAP bit flip outside chunks (LZ4)", "of the attachment ("): r"the data section fails its CRC check",
    ("MCAP bit flip outside chunks (uncompressed)", "metadata start_ns"): r"the data section fails its CRC",
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
    ds = LeRobotDataset(tmp_path / "ds", _robot_of(root))
    assert ds.episodes == (0, 1) and ds[0].observation.instruction == "transfer the cube 1"


def _robot_of(root: Path, good: str = "rec/episode_000001") -> object:
    """The robot YAML a readable bag of ``root`` carries."""
    from qvla_core.data.convert import robot_config_for
    from qvla_core.data.mcap_reader import find_bags

    return robot_config_for(find_bags([root / good]), None).embodiment


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


def _plain_mcap(path: Path, record: dict[str, str] | None = None, attachment: bytes = b"") -> Path:
    """A small MCAP without a data-section CRC (as rosbag2 writes them): 0.1 .. 1.1 s of messages."""
    from mcap.writer import Writer

    with path.open("wb") as f:
        w = Writer(f)
        w.start("ros2", "test")
        channel = w.register_channel("/x", "cdr", w.register_schema("std_msgs/msg/Empty", "ros2msg", b""))
        for t in (100_000_000, 1_100_000_000):
            w.add_message(channel, t, b"\x00\x01\x00\x00", t)
        if attachment:
            w.add_attachment(0, 0, "robot.yaml", "application/yaml", attachment)
        if record is not None:
            w.add_metadata("qvla_episode", record)
        w.finish()
    return path


GOOD_RECORD = {"episode_index": "0", "task": "pick", "start_ns": "200000000", "stop_ns": "1000000000"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start_ns": "2000000o0"}, r"start_ns must be a non-negative integer \(got '2000000o0'\)"),
        (
            {"stop_ns": "100000000"},
            r"the episode 200000000..100000000 ns is empty or outside the bag's messages",
        ),
        ({"start_ns": "9000000000", "stop_ns": "9900000000"}, r"outside the bag's messages"),
        ({"success": "tsue"}, r"success must be 'true' or 'false' \(got 'tsue'\)"),
        ({"task": "pick\x00up"}, r"the task text has unprintable characters"),
        ({"messages_written": "3"}, r"messages_written 3, but the bag holds 2 messages"),
        ({"episode_index": ""}, r"episode_index must be a non-negative integer"),
    ],
)
def test_an_episode_record_the_recorder_never_writes_is_refused(
    change: dict[str, str], message: str, tmp_path: Path
) -> None:
    from qvla_core.data.mcap_reader import Bag, RecordingError

    path = _plain_mcap(tmp_path / "e.mcap", GOOD_RECORD | {"messages_written": "2"} | change)
    with pytest.raises(RecordingError, match=rf"{path}: qvla_episode record .*{message}"):
        Bag(path).episodes()


def test_the_good_episode_record_opens(tmp_path: Path) -> None:
    from qvla_core.data.mcap_reader import Bag

    (span,) = Bag(_plain_mcap(tmp_path / "e.mcap", GOOD_RECORD | {"success": "false"})).episodes()
    assert (span.task, span.success, span.start_ns, span.stop_ns) == (
        "pick",
        False,
        200_000_000,
        1_000_000_000,
    )


def test_a_damaged_attachment_fails_its_crc(tmp_path: Path) -> None:
    from qvla_core.data.mcap_reader import Bag, RecordingError

    path = _plain_mcap(tmp_path / "a.mcap", attachment=b"embodiment: {name: aloha}\n")
    assert Bag(path).robot_yaml == "embodiment: {name: aloha}\n"
    data = bytearray(path.read_bytes())
    data[data.find(b"aloha")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"{path}: the attachment at byte \d+ fails its CRC check"):
        Bag(path)


def test_the_cli_with_skip_bad_warns_about_the_bag_it_left_out(
    bags: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qvla_core.cli.convert import main

    from . import fuzz_mcap_cases as mc

    root = tmp_path / "bags"
    shutil.copytree(bags, root)
    (root / mc.OURS_LZ4).write_bytes(b"")
    out = tmp_path / "ds"
    assert main([str(root / "rec"), "--out", str(out), "--no-progress"]) == 2
    assert f"qvla-convert: error: {root / mc.OURS_LZ4}: cannot read this MCAP file" in capsys.readouterr().err
    assert main([str(root / "rec"), "--out", str(out), "--no-progress", "--skip-bad"]) == 0
    assert f"qvla-convert: warning: left out {root / 'rec/episode_000001'}: {root / mc.OURS_LZ4}" in (
        capsys.readouterr().err
    )
    ds = LeRobotDataset(out, _robot_of(root, "rec/episode_000000"))
    assert ds.episodes == (0, 1) and ds[len(ds) - 1].observation.instruction == "transfer the cube 2"


# ----------------------------------------------------------------------------- caches
@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("reader cache .npy zero bytes", r"the decoded-frame cache is damaged \(EOFError"),
        ("reader cache .npy of another shape", r"the decoded-frame cache is damaged \(uint8 \(22, 4608\)"),
        (
            "training cache state.npy of another shape",
            r"state.npy: float32 \(22, 7\), expected float32 \(22, 14\)",
        ),
        ("training cache images.npy cut in half", r"images.npy: ValueError"),
        ("training cache meta.json garbage", r"meta.json: JSONDecodeError"),
    ],
)
def test_a_damaged_frame_cache_is_rebuilt_with_a_warning(
    name: str, warning: str, pristine: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from .fuzz_cache_cases import cache_cases
    from .fuzz_inputs import training_digest

    case = next(c for c in cache_cases() if c.name == name)
    before = training_digest(pristine, dc.robot(), tmp_path)
    case.damage(tmp_path)
    if case.target == "reader-cache":
        shutil.rmtree(tmp_path / "train-cache")  # else the training cache is used, not the reader's
    with caplog.at_level(logging.WARNING, logger="qvla"):
        after = training_digest(pristine, dc.robot(), tmp_path)
    assert after == before
    assert re.search(warning, caplog.text), caplog.text
