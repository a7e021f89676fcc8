"""Bags -> LeRobot v3.0 dataset (qvla-convert), end to end on small bags made here: ours (written by
the recorder's EpisodeBag, with task, success and robot YAML inside), and a plain ``ros2 bag
record``-style directory (metadata.yaml, split files, written with mcap_ros2's own writer), plus
every kind of bad input: each a clear error naming the file, topic or episode, and no dataset."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from builtin_interfaces.msg import Duration, Time
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from qvla_core.data.convert import convert
from qvla_core.data.dataset import LeRobotDataset
from qvla_core.data.format import DatasetError
from qvla_core.data.mcap_reader import RecordingError, find_bags
from qvla_core.embodiment import parse_model
from qvla_core.errors import ConfigError
from qvla_core.robot_io import RobotConfig, recorded_topics
from qvla_ros.io.episode_bag import EpisodeBag, TopicSpec, message_definition

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
CAM, LEFT, RIGHT = "/cam_high/image_raw", "/follower_left/joint_states", "/follower_right/joint_states"
LCTRL = "/follower_left/arm_controller/joint_trajectory"
RCTRL = "/follower_right/arm_controller/joint_trajectory"
W, H = 32, 24
MS = 1_000_000
TASK = "transfer the cube"


def robot_yaml() -> str:
    data = copy.deepcopy(yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text()))
    data["embodiment"]["cameras"] = [{"name": "cam_high", "width": W, "height": H}]
    data["ros"]["cameras"] = [{"camera": "cam_high", "topic": CAM}]
    data["ros"]["recording"] = {"actions": {"source": "commanded_trajectory"}}
    return yaml.safe_dump(data, sort_keys=False)


CONFIG: RobotConfig = parse_model(RobotConfig, yaml.safe_load(robot_yaml()), "test")


def gradient(t_ms: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    r = 128 + 90 * np.sin(x / 6.0 + t_ms / 300)
    g = 128 + 90 * np.sin(y / 5.0 - t_ms / 500)
    return np.stack([r, g, np.full(x.shape, 60.0)], axis=-1).round().astype(np.uint8)


def stamp(ns: int) -> Header:
    return Header(stamp=Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))


def messages(until_ms: int, skip: tuple[str, ...] = ()) -> list[tuple[str, int, bytes]]:
    """(topic, log ns, CDR): states at 50 Hz (left waist = t), frames at 25 Hz, a left-arm
    trajectory every 200 ms (waist ramping to 2 t)."""
    out = []
    for t in range(0, until_ms + 1, 20):
        ns = t * MS
        for topic, sign in ((LEFT, 1.0), (RIGHT, -1.0)):
            js = JointState(header=stamp(ns), name=JOINTS, position=[sign * t / 1000] * 6 + [0.4])
            out.append((topic, ns, serialize_message(js)))
        if t % 40 == 0:
            rgb = gradient(t)
            img = Image(header=stamp(ns), height=H, width=W, encoding="rgb8", step=3 * W, data=rgb.tobytes())
            out.append((CAM, ns, serialize_message(img)))
        if t % 200 == 100:
            points = [
                JointTrajectoryPoint(
                    positions=[2 * (t + 20 * k) / 1000] * 6 + [0.4],
                    time_from_start=Duration(nanosec=20 * k * MS),
                )
                for k in range(15)
            ]
            traj = JointTrajectory(header=stamp(ns + 20 * MS), joint_names=JOINTS, points=points)
            out.append((LCTRL, ns, serialize_message(traj)))
        if t == 700:  # the right arm gets one command: a point 0.5 s ahead
            point = JointTrajectoryPoint(positions=[0.0] * 7, time_from_start=Duration(nanosec=500 * MS))
            right = JointTrajectory(header=stamp(ns), joint_names=JOINTS, points=[point])
            out.append((RCTRL, ns, serialize_message(right)))
    return [m for m in out if m[0] not in skip]


def our_bag(
    directory: Path,
    until_ms: int = 2000,
    start_ms: int = 300,
    stop_ms: int = 1800,
    success: bool = True,
    task: str = TASK,
    skip: tuple[str, ...] = (),
    types: dict[str, str] | None = None,
) -> Path:
    topics = types or {t: k for t, k in recorded_topics(CONFIG).items() if t not in skip}
    specs = [TopicSpec(name, kind) for name, kind in topics.items()]
    bag = EpisodeBag(directory, specs, robot_yaml=robot_yaml())
    index = {s.name: i for i, s in enumerate(specs)}
    for topic, ns, data in messages(until_ms, skip):
        bag.put(index[topic], ns, ns, 0, data)
    episode = {
        "episode_index": "0",
        "task": task,
        "start_ns": str(start_ms * MS),
        "stop_ns": str(stop_ms * MS),
    }
    bag.close(episode | {"success": "true" if success else "false"})
    return directory


def ros2_bag(directory: Path, until_ms: int = 2000, split_ms: int = 1000) -> Path:
    """What ``ros2 bag record -s mcap`` leaves: metadata.yaml and two split files, no qvla records, and
    Zstd-compressed chunks (rosbag2's default storage preset)."""
    from mcap.writer import CompressionType
    from mcap_ros2.writer import Writer

    directory.mkdir(parents=True)
    names = [f"{directory.name}_0.mcap", f"{directory.name}_1.mcap"]
    writers = [Writer(str(directory / n), compression=CompressionType.ZSTD) for n in names]
    schemas = [
        {t: w.register_msgdef(k, message_definition(k)) for t, k in recorded_topics(CONFIG).items()}
        for w in writers
    ]
    from mcap_ros2._dynamic import generate_dynamic

    for topic, ns, data in messages(until_ms):
        k = 0 if ns < split_ms * MS else 1
        schema = schemas[k][topic]
        decoded = generate_dynamic(schema.name, schema.data.decode())[schema.name](data)
        writers[k].write_message(topic, schema, decoded, log_time=ns, publish_time=ns)
    for w in writers:
        w.finish()
    meta = {
        "rosbag2_bagfile_information": {
            "version": 8,
            "storage_identifier": "mcap",
            "relative_file_paths": names,
        }
    }
    (directory / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return directory


def load(root: Path) -> LeRobotDataset:
    return LeRobotDataset(root, CONFIG.embodiment)


# ----------------------------------------------------------------------------- good input
def test_our_bags_carry_task_success_and_robot_yaml(tmp_path: Path) -> None:
    our_bag(tmp_path / "rec/episode_000000", task="transfer the cube")
    our_bag(tmp_path / "rec/episode_000001", task="hand it over", start_ms=500, stop_ms=1500, success=False)
    report = convert(find_bags([tmp_path / "rec"]), tmp_path / "ds", progress=False)
    ds = load(tmp_path / "ds")
    assert ds.episodes == (0, 1)
    assert [e.frames for e in report.episodes] == [
        76,
        51,
    ]  # (1.8 - 0.3) s and (1.5 - 0.5) s at 50 Hz, both ends
    assert len(ds) == 127
    first, second = ds[0], ds[76]
    assert (first.episode_index, first.frame_index, second.episode_index, second.frame_index) == (0, 0, 1, 0)
    assert (
        first.observation.instruction == "transfer the cube"
        and second.observation.instruction == "hand it over"
    )
    assert ds.episode(0).success is True and ds.episode(1).success is False
    # Frame 10 of episode 0 is the tick at 0.5 s: state = published joint states at 0.5 s.
    s = ds[10]
    assert s.observation.state[0] == pytest.approx(0.5) and s.observation.state[7] == pytest.approx(-0.5)
    # The action due at 0.5 s: the trajectory received at 0.5 s starts at 0.52 s; until then the one
    # received at 0.3 s (start 0.32 s) runs: point k at 0.32 + 0.02 k has waist 2 * (0.3 + 0.02 k).
    assert s.actions[0, 0] == pytest.approx(2 * 0.48, abs=1e-5)
    img = s.observation.images["cam_high"][0].astype(int)
    # The frame at 0.48 s (25 Hz), through H.264: the nearest of all frames, and close to it.
    errors = {t: np.abs(img - gradient(t)).mean() for t in range(0, 2001, 40)}
    assert min(errors, key=errors.__getitem__) == 480 and errors[480] < 10, errors

    only = convert(find_bags([tmp_path / "rec"]), tmp_path / "ds2", only_success=True, progress=False)
    assert [e.skipped for e in only.episodes] == ["", "not successful"]
    assert load(tmp_path / "ds2").episodes == (0,)


def test_a_ros2_bag_directory_split_in_two_files_is_one_episode(tmp_path: Path) -> None:
    bags = find_bags([ros2_bag(tmp_path / "rosbag2_2026_12_01")])
    assert len(bags[0].files) == 2
    with pytest.raises(ConfigError, match=r"carries no robot YAML.*give --robot-config"):
        convert(bags, tmp_path / "ds", task=TASK, progress=False)
    config = tmp_path / "robot.yaml"
    config.write_text(robot_yaml())
    with pytest.raises(RecordingError, match="give --task"):
        convert(bags, tmp_path / "ds", robot_config=config, progress=False)
    report = convert(bags, tmp_path / "ds", robot_config=config, task=TASK, progress=False)
    ds = load(tmp_path / "ds")
    # From the first message (0 s) to the last (2 s); the first tick has every input.
    assert len(ds) == report.frames == 101
    assert ds[60].observation.state[0] == pytest.approx(1.2)  # across the file split at 1 s
    assert ds.episode(0).success is None and ds[0].observation.instruction == TASK


# ----------------------------------------------------------------------------- bad input
def test_a_truncated_file_is_an_error_naming_it(tmp_path: Path) -> None:
    bag = our_bag(tmp_path / "episode_000000", until_ms=3000, stop_ms=2800)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) * 6 // 10])  # cut inside a chunk
    with pytest.raises(RecordingError, match=rf"{mcap}.*truncated or corrupt"):
        convert(find_bags([bag]), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_a_corrupt_chunk_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bag = our_bag(tmp_path / "episode_000000", until_ms=3000, stop_ms=2800)
    mcap = next(bag.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)  # inside the pixels of a chunk: only the CRC can tell
    mcap.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"{mcap}.*(CRC|crc|truncated or corrupt)"):
        convert(find_bags([bag]), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()


def test_a_recording_without_the_action_topic(tmp_path: Path) -> None:
    bag = our_bag(tmp_path / "episode_000000", skip=(LCTRL,))
    with pytest.raises(RecordingError, match=rf"{LCTRL}.*was not recorded"):
        convert(find_bags([bag]), tmp_path / "ds", progress=False)


def test_a_topic_whose_type_disagrees_with_the_yaml(tmp_path: Path) -> None:
    types = dict(recorded_topics(CONFIG))
    types[RIGHT] = "sensor_msgs/msg/Imu"  # the bytes do not matter: the type check comes first
    bag = our_bag(tmp_path / "episode_000000", types=types)
    with pytest.raises(
        RecordingError,
        match=rf"{RIGHT} is sensor_msgs/msg/Imu; the robot YAML expects sensor_msgs/msg/JointState",
    ):
        convert(find_bags([bag]), tmp_path / "ds", progress=False)


def test_a_camera_gap_names_bag_and_episode_and_skip_bad_leaves_it_out(tmp_path: Path) -> None:
    good = our_bag(tmp_path / "rec/episode_000000")
    bad_dir = tmp_path / "rec/episode_000001"
    topics = recorded_topics(CONFIG)
    specs = [TopicSpec(n, k) for n, k in topics.items()]
    bag = EpisodeBag(bad_dir, specs, robot_yaml=robot_yaml())
    index = {s.name: i for i, s in enumerate(specs)}
    for topic, ns, data in messages(2000):
        if not (topic == CAM and 800 * MS <= ns < 1200 * MS):  # 0.4 s without frames; the limit is 0.2 s
            bag.put(index[topic], ns, ns, 0, data)
    bag.close({"episode_index": "1", "task": TASK, "start_ns": str(300 * MS), "stop_ns": str(1800 * MS)})
    with pytest.raises(RecordingError, match=rf"{bad_dir} \(episode 1\): gap at .*cam_high"):
        convert(find_bags([tmp_path / "rec"]), tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    report = convert(find_bags([tmp_path / "rec"]), tmp_path / "ds", skip_bad=True, progress=False)
    assert report.episodes[0].source.startswith(str(good)) and report.episodes[0].dataset_index == 0
    assert "gap" in report.episodes[1].skipped and report.episodes[1].dataset_index is None
    assert load(tmp_path / "ds").episodes == (0,)


def test_an_episode_that_was_never_stopped_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "episode_000000"
    specs = [TopicSpec(n, k) for n, k in recorded_topics(CONFIG).items()]
    bag = EpisodeBag(directory, specs, robot_yaml=robot_yaml())
    for topic, ns, data in messages(500):
        bag.put([s.name for s in specs].index(topic), ns, ns, 0, data)
    time.sleep(0.2)
    bag.abort()  # the recorder died: no summary, no footer
    with pytest.raises(RecordingError, match="truncated or corrupt"):
        find_bags([directory])


def test_the_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    bag = our_bag(tmp_path / "episode_000000", skip=(LCTRL,))
    proc = subprocess.run(
        [sys.executable, "-m", "qvla_core.cli.convert", str(bag), "--out", str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert f"qvla-convert: error: {bag}: topic {LCTRL}" in proc.stderr


def test_an_interrupted_conversion_leaves_nothing_that_loads(tmp_path: Path) -> None:
    bags = [our_bag(tmp_path / f"rec/episode_{i:06d}", until_ms=6000, stop_ms=5800) for i in range(4)]
    out = tmp_path / "ds"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qvla_core.cli.convert", str(tmp_path / "rec"), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    staged: list[Path] = []
    while not staged and proc.poll() is None and time.monotonic() < deadline:
        staged = [p for p in tmp_path.glob(".ds.staging-*") if (p / "data").exists()]  # an episode is saved
        time.sleep(0.005)
    assert staged, f"the conversion finished or never started: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(DatasetError):
        load(out)
    with pytest.raises(DatasetError):
        load(staged[0])  # the half-written staging directory does not load as a dataset either
    report = convert(find_bags(bags), out, progress=False)  # a rerun completes
    assert len(load(out)) == report.frames == 4 * 276
