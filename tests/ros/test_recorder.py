"""The installed recorder_node over real DDS, recording the installed MuJoCo sim_node (small images),
and the recording converted and loaded back: frames = control ticks, images = what the sim
rendered (after the video round trip), states and actions = what was published, episodes and tasks
in order; the MCAP files read back with the ``mcap`` reader hold the ROS 2 layout."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed")

from qvla_core.data.convert import convert  # noqa: E402
from qvla_core.data.dataset import LeRobotDataset  # noqa: E402
from qvla_core.data.mcap_reader import find_bags  # noqa: E402
from qvla_core.robot_io import RobotConfig, load_robot_config  # noqa: E402
from qvla_core.runtime.joint_state import GripperScaling  # noqa: E402
from qvla_msgs.srv import StartEpisode, StopEpisode  # noqa: E402
from qvla_ros.io import conversions as conv  # noqa: E402
from qvla_ros.tools.bringup import write_robot_variant  # noqa: E402
from tests.ros.harness import REPO, InstalledNode, RosPeer, wait_for  # noqa: E402
from tests.ros.test_sim_node import LEFT, LEFT_CTRL, SimPeer  # noqa: E402

WIDTH, HEIGHT = 96, 72
RAMP_POINTS = 40


@dataclass
class Rig:
    peer: SimPeer
    recorder: InstalledNode
    config: RobotConfig
    out: Path

    def start(self, task: str) -> StartEpisode.Response:
        client = self.peer.peer.node.create_client(StartEpisode, "/qvla_recorder/start_episode")
        return self.peer.peer.call(client, StartEpisode.Request(task=task), timeout=20.0)

    def stop(self, success: bool, discard: bool = False) -> StopEpisode.Response:
        client = self.peer.peer.node.create_client(StopEpisode, "/qvla_recorder/stop_episode")
        return self.peer.peer.call(
            client, StopEpisode.Request(success=success, discard=discard), timeout=30.0
        )


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("recorder")
    robot = write_robot_variant(
        REPO / "config/robots/aloha.yaml",
        work / "aloha.yaml",
        camera_size=(WIDTH, HEIGHT),
        cameras=["cam_high", "cam_left_wrist"],
        action_source="commanded_trajectory",
    )
    config = load_robot_config(robot)
    params = {"robot_config": str(robot), "image_width": WIDTH, "image_height": HEIGHT, "seed": 5}
    sim = InstalledNode("qvla_ros", "sim_node", params, name="qvla_sim")
    recorder = InstalledNode(
        "qvla_ros",
        "recorder_node",
        {"robot_config": str(robot), "output_dir": str(work / "bags"), "use_sim_time": True},
        name="qvla_recorder",
    )
    peer = RosPeer("qvla_recorder_test_peer")
    try:
        probe = SimPeer(peer, config)
        wait_for(lambda: probe.rec.series(LEFT), 60.0, "the first joint state from sim_node")
        probe.handshake(sim)
        yield Rig(probe, recorder, config, work / "bags")
    finally:
        peer.close()
        logs = {"recorder_node": recorder.close(), "sim_node": sim.close()}
    for exe, log in logs.items():
        assert "Traceback" not in log, f"{exe}:\n{log[-3000:]}"


def test_services_refuse_what_makes_no_sense(rig: Rig) -> None:
    stopped = rig.stop(success=True)
    assert not stopped.accepted and "no episode" in stopped.message
    empty = rig.start("   ")
    assert not empty.accepted and "empty" in empty.message
    first = wait_for(lambda: (r := rig.start("scratch")).accepted and r, 30.0, "the recorder to start")
    again = rig.start("another")
    assert not again.accepted and "stop it first" in again.message
    discarded = rig.stop(success=False, discard=True)
    assert discarded.accepted and not Path(first.path).parent.exists()


def _ramp(rig: Rig, start: float) -> np.ndarray:
    """A left-arm trajectory from ``start``: waist ramping by 0.01 rad per point; returns the points."""
    _, _, q = rig.peer.rec.states[LEFT][-1]
    points = np.repeat(q[None, :], RAMP_POINTS, axis=0)
    points[:, 0] += 0.01 * np.arange(1, RAMP_POINTS + 1)
    rig.peer.send(LEFT_CTRL, start, [(0.02 * k, points[k]) for k in range(RAMP_POINTS)])
    return points


def test_two_episodes_recorded_converted_and_loaded_back(rig: Rig, tmp_path: Path) -> None:
    rec, config = rig.peer.rec, rig.config
    a = wait_for(lambda: (r := rig.start("reach out")).accepted and r, 30.0, "the recorder to start")
    pub = rig.peer.traj_pubs[LEFT_CTRL]
    wait_for(lambda: pub.get_subscription_count() >= 2, 10.0, "sim and recorder on the left controller")
    ramp_start = round(rec.now() + 0.4, 2)  # on the 20 ms sim grid
    points = _ramp(rig, ramp_start)
    rig.peer.wait_sim(ramp_start + 0.02 * RAMP_POINTS + 0.2)
    stop_a = rig.stop(success=True)
    b = rig.start("stay still")
    rig.peer.wait_sim(rec.now() + 0.5)
    stop_b = rig.stop(success=False)
    assert a.accepted and b.accepted and stop_a.accepted and stop_b.accepted, (a, b, stop_a, stop_b)
    assert stop_a.messages_dropped == 0 and stop_b.messages_dropped == 0, (stop_a.message, stop_b.message)

    _check_mcap_layout(Path(stop_a.path))
    bags = find_bags([rig.out])
    spans = [span for bag in bags for span in bag.episodes()]
    report = convert(bags, tmp_path / "ds", progress=False)
    ds = LeRobotDataset(tmp_path / "ds", config.embodiment)
    assert ds.episodes == (0, 1)
    assert [ds.episode(i).success for i in (0, 1)] == [True, False]
    dt_ns = 20_000_000
    ticks = [(s.stop_ns - s.start_ns) // dt_ns + 1 for s in spans]  # type: ignore[operator]
    assert [ds.episode(i).length for i in (0, 1)] == ticks == [e.frames for e in report.episodes]

    grippers = GripperScaling(config.ros.gripper_raw_range)
    offset = 0
    for episode, (span, task) in enumerate(zip(spans, ("reach out", "stay still"), strict=True)):
        assert span.start_ns is not None
        for k in range(ticks[episode]):
            sample = ds[offset + k]
            assert (sample.episode_index, sample.frame_index) == (episode, k)
            assert sample.observation.instruction == task
            t = (span.start_ns + k * dt_ns) / 1e9
            want = _published_state(rig, config, t, grippers)
            np.testing.assert_allclose(
                sample.observation.state, want, atol=1e-6, err_msg=f"ep {episode} t {t}"
            )
            if episode == 0:
                _check_action(sample.actions[0], t, ramp_start, points, ds[0].observation.state, grippers)
            if k % 10 == 0:
                _check_images(rig, sample.observation.images, t)
        offset += ticks[episode]


def _published_state(rig: Rig, config: RobotConfig, t: float, grippers: GripperScaling) -> np.ndarray:
    """The joint states the sim published, newest stamp not after ``t``, in the YAML's state order."""
    out = np.zeros(len(config.embodiment.state))
    names = config.embodiment.state_names
    for src in config.ros.joint_states:
        stamp, got_names, q = max(
            (s for s in rig.peer.rec.states[src.topic] if s[0] <= t + 1e-9), key=lambda s: s[0]
        )
        assert t - stamp < 0.021 and list(got_names) == list(src.joint_names)
        for joint, channel in zip(src.joint_names, src.channels, strict=True):
            out[names.index(channel)] = grippers.to_normalised(channel, q[got_names.index(joint)])
    return out


def _check_action(
    action: np.ndarray,
    t: float,
    start: float,
    points: np.ndarray,
    first_state: np.ndarray,
    grippers: GripperScaling,
) -> None:
    k = round((t - start) / 0.02)
    if t < start - 1e-9:  # nothing commanded yet in this episode: the controller holds the start
        assert action[0] == pytest.approx(first_state[0], abs=1e-5)
    elif k < RAMP_POINTS:  # the point due at this tick, as sent (the gripper normalised)
        assert action[0] == pytest.approx(points[k, 0], abs=1e-5), (t, k)
        assert action[6] == pytest.approx(grippers.to_normalised("left_gripper", points[k, 6]), abs=1e-5)
    else:  # after the last point: held
        assert action[0] == pytest.approx(points[-1, 0], abs=1e-5)


def _check_images(rig: Rig, images: dict[str, np.ndarray], t: float) -> None:
    """Each camera's frame is the one the sim rendered last before ``t``: within video-compression
    distance of it, and nearer to it than to every published frame that looks different from it
    (while the arms hold still, neighbouring frames are alike and cannot be told apart)."""
    for camera, frames in images.items():
        got = frames[-1].astype(np.int16)
        published = {
            s: conv.image_to_rgb(m).astype(np.int16) for s, m in rig.peer.rec.images[camera] if abs(s - t) < 1
        }
        want = max(s for s in published if s <= t + 1e-9)
        error = float(np.abs(got - published[want]).mean())
        assert error < 6.0, (camera, t, error)
        for s, rgb in published.items():
            if float(np.abs(rgb - published[want]).mean()) > 2 * error + 1.0:
                assert float(np.abs(got - rgb).mean()) > error, (camera, t, s, want)


def _check_mcap_layout(path: Path) -> None:
    from mcap.reader import make_reader

    with path.open("rb") as f:
        reader = make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert summary is not None
        by_topic = {c.topic: c for c in summary.channels.values()}
        image = by_topic["/cam_high/image_raw"]
        schema = summary.schemas[image.schema_id]
        assert (image.message_encoding, schema.name, schema.encoding) == (
            "cdr",
            "sensor_msgs/msg/Image",
            "ros2msg",
        )
        text = schema.data.decode()
        assert (
            "uint8[] data" in text
            and "\nMSG: std_msgs/Header\n" in text
            and "\nMSG: builtin_interfaces/Time\n" in text
        )
        assert "offered_qos_profiles" in image.metadata
        names = {m.name for m in reader.iter_metadata()}
        assert {"qvla_episode", "rosbag2"} <= names
        assert [a.name for a in reader.iter_attachments()] == ["robot.yaml"]
    assert (path.parent / "metadata.yaml").is_file()


def test_message_types_resolve_without_rosidl_runtime_py() -> None:
    """The recorder resolves advertised types itself (rosidl_runtime_py is not on PyPI); a type that
    is not installed is refused with a message that names it and says what to install."""
    from sensor_msgs.msg import Image

    from qvla_core.errors import QvlaError
    from qvla_ros.io.message_types import message_class

    assert message_class("sensor_msgs/msg/Image") is Image
    # control_msgs is not on PyPI and not in ../shared/ros2-extras: truly absent here (nav2_msgs is built)
    with pytest.raises(
        QvlaError, match=r"control_msgs/msg/JointTrajectoryControllerState.*install the package control_msgs"
    ):
        message_class("control_msgs/msg/JointTrajectoryControllerState")
    with pytest.raises(QvlaError, match="not of the form pkg/msg/Name"):
        message_class("sensor_msgs/Image")
