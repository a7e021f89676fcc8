"""Resampling recorded messages onto control ticks (qvla_core.data.resample), with the policy node's
rules: newest observation not newer than the tick within the YAML's ages, merged joint states,
the commanded action as a joint_trajectory_controller executes it, or the leader's joint state.
Messages are plain objects with the ROS field names (what mcap_ros2 decodes to)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace as Ns
from typing import Any

import numpy as np
import pytest
import yaml

from qvla_core.data.mcap_reader import Message, RecordingError
from qvla_core.data.resample import EpisodeResampler, Frame
from qvla_core.embodiment import parse_model
from qvla_core.robot_io import RobotConfig

REPO = Path(__file__).resolve().parents[2]
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
LEFT, RIGHT = "/follower_left/joint_states", "/follower_right/joint_states"
CAM = "/cam_high/image_raw"
LCTRL = "/follower_left/arm_controller/joint_trajectory"
RCTRL = "/follower_right/arm_controller/joint_trajectory"
MS = 1_000_000
W, H = 8, 6
GRIP = (-0.6213, 1.4910)


def config(source: str = "commanded_trajectory") -> RobotConfig:
    data = yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text())
    data = copy.deepcopy(data)
    data["embodiment"]["cameras"] = [{"name": "cam_high", "width": W, "height": H}]
    data["ros"]["cameras"] = [{"camera": "cam_high", "topic": CAM}]
    if source == "commanded_trajectory":
        data["ros"]["recording"] = {"actions": {"source": source}}
    cfg: RobotConfig = parse_model(RobotConfig, data, "test aloha")
    return cfg


def stamp(ns: int) -> Ns:
    return Ns(header=Ns(stamp=Ns(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))


def joint_state(ns: int, positions: list[float], names: list[str] = JOINTS) -> Any:
    msg = stamp(ns)
    msg.name, msg.position = list(names), list(positions)
    return msg


def image(ns: int, value: int) -> Any:
    msg = stamp(ns)
    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian = "rgb8", H, W, 3 * W, 0
    msg.data = bytes([value % 256]) * (3 * W * H)
    return msg


def trajectory(start_ns: int, rows: np.ndarray, dt_s: float = 0.02, names: list[str] = JOINTS) -> Any:
    msg = stamp(start_ns)
    msg.joint_names = list(names)
    msg.points = []
    for k, row in enumerate(rows):
        t = k * dt_s
        msg.points.append(
            Ns(positions=list(row), time_from_start=Ns(sec=int(t), nanosec=round((t % 1) * 1e9)))
        )
    return msg


def arm(value: float, gripper_norm: float = 0.5) -> list[float]:
    return [value] * 6 + [GRIP[0] + gripper_norm * (GRIP[1] - GRIP[0])]


def stream(
    until_ms: int, cam_every_ms: int = 40, cam_gap: tuple[int, int] | None = None, lag_ms: int = 0
) -> list[Message]:
    """50 Hz joint states (left arm value = t in s, right = -t) and 25 Hz frames (value = t in 10 ms),
    logged ``lag_ms`` after their stamp, in log order."""
    out = []
    for t in range(0, until_ms + 1, 20):
        ns = t * MS
        out.append(Message(LEFT, ns + lag_ms * MS, joint_state(ns, arm(t / 1000))))
        out.append(Message(RIGHT, ns + lag_ms * MS, joint_state(ns, arm(-t / 1000))))
        if t % cam_every_ms == 0 and not (cam_gap and cam_gap[0] <= t < cam_gap[1]):
            out.append(Message(CAM, ns + lag_ms * MS, image(ns, t // 10)))
    return sorted(out, key=lambda m: m.log_ns)


def run(
    cfg: RobotConfig, messages: list[Message], start_ms: int, stop_ms: int
) -> tuple[list[Frame], EpisodeResampler]:
    r = EpisodeResampler(cfg, "bag-x (episode 3)", start_ms * MS, stop_ms * MS)
    frames = []
    for m in sorted(messages, key=lambda m: m.log_ns):
        r.add(m)
        frames.extend(r.ready(m.log_ns))
    frames.extend(r.finish())
    return frames, r


def test_one_frame_per_tick_with_the_newest_inputs_not_newer_than_it() -> None:
    frames, r = run(config(), stream(2000), start_ms=500, stop_ms=1500)
    assert len(frames) == r.ticks == 51  # 0.5 .. 1.5 s at 50 Hz, both ends
    assert [f.stamp_ns for f in frames] == [(500 + 20 * k) * MS for k in range(51)]
    for f in frames:
        t_ms = f.stamp_ns // MS
        assert f.state[0] == pytest.approx(t_ms / 1000)  # joint state stamped at the tick
        assert f.state[7] == pytest.approx(-t_ms / 1000)
        assert f.state[6] == pytest.approx(0.5, abs=1e-6)  # gripper normalised by gripper_raw_range
        newest_frame_ms = t_ms - t_ms % 40  # 25 Hz camera: the frame at or before the tick
        assert int(f.images["cam_high"][0, 0, 0]) == (newest_frame_ms // 10) % 256
    assert r.stats.leading_ticks_skipped == 0


def test_commanded_action_is_the_point_due_at_the_tick_and_holds_the_start_before() -> None:
    cfg = config()
    msgs = stream(2000)
    # A left-arm trajectory received at 0.8 s whose points run from 1.0 s: point k = 0.1 * k.
    rows = np.array([[*arm(0.1 * k)[:6], 0.8] for k in range(20)])
    rows[:, 6] = GRIP[0] + rows[:, 6] * (GRIP[1] - GRIP[0])  # gripper in hardware units on the wire
    msgs.append(Message(LCTRL, 800 * MS, trajectory(1000 * MS, rows)))
    frames, r = run(cfg, msgs, start_ms=500, stop_ms=1600)
    by_ms = {f.stamp_ns // MS: f for f in frames}
    start_state = by_ms[500].state
    for t_ms in (500, 700, 800):
        np.testing.assert_allclose(by_ms[t_ms].action, start_state, atol=1e-6)  # holding the start
    for k in range(6, 20):  # JTC: from the command at 1.0 s to point 1 at 1.02 s, ..., point k at 1.0 + k*dt
        f = by_ms[1000 + 20 * k]
        np.testing.assert_allclose(f.action[:6], 0.1 * k, atol=1e-5)
        assert f.action[6] == pytest.approx(0.8, abs=1e-5)  # normalised back
        np.testing.assert_allclose(f.action[7:], start_state[7:], atol=1e-6)  # right arm: no command
    np.testing.assert_allclose(by_ms[1600].action[:6], 0.1 * 19, atol=1e-5)  # after the last point: holds it
    assert r.stats.trajectories_rejected == 0


def test_a_trajectory_from_before_the_episode_is_not_executed() -> None:
    msgs = stream(1500)
    msgs.append(Message(LCTRL, 300 * MS, trajectory(600 * MS, np.full((10, 7), 0.3))))
    frames, _ = run(config(), msgs, start_ms=500, stop_ms=1000)
    assert all(abs(f.action[0] - frames[0].state[0]) < 1e-6 for f in frames)


def test_leader_actions_come_from_the_leader_topics_with_their_gripper_range() -> None:
    cfg = config(source="leader")
    leader_grip = (-1.65, -0.8)
    msgs = stream(1500)
    for t in range(0, 1501, 20):
        ns = t * MS
        for topic, sign in (("/leader_left/joint_states", 1), ("/leader_right/joint_states", -1)):
            pos = [sign * 2 * t / 1000] * 6 + [leader_grip[0] + 0.25 * (leader_grip[1] - leader_grip[0])]
            msgs.append(Message(topic, ns, joint_state(ns, pos)))
    frames, _ = run(cfg, msgs, start_ms=500, stop_ms=1000)
    for f in frames:
        t = f.stamp_ns / 1e9
        assert f.action[0] == pytest.approx(2 * t, abs=1e-5)
        assert f.action[7] == pytest.approx(-2 * t, abs=1e-5)
        assert f.action[6] == pytest.approx(0.25, abs=1e-5)


def test_a_camera_gap_longer_than_max_image_age_is_an_error_naming_episode_and_camera() -> None:
    with pytest.raises(RecordingError, match=r"bag-x \(episode 3\).*gap.*cam_high.*0\.2"):
        run(config(), stream(2000, cam_gap=(1000, 1300)), start_ms=500, stop_ms=1500)


def test_a_gap_shorter_than_max_image_age_is_not() -> None:
    frames, r = run(config(), stream(2000, cam_gap=(1000, 1120)), start_ms=500, stop_ms=1500)
    assert len(frames) == r.ticks


def test_leading_ticks_without_a_complete_observation_are_skipped_and_counted() -> None:
    msgs = [m for m in stream(1500) if not (m.topic == CAM and m.log_ns < 300 * MS)]
    frames, r = run(config(), msgs, start_ms=0, stop_ms=1000)
    assert r.stats.leading_ticks_skipped == 16  # 0 .. 0.30 s: no camera frame yet (the first at 0.32 s)
    assert frames[0].stamp_ns == 320 * MS and frames[0].index == 0


def test_messages_logged_late_are_still_used_when_their_stamp_fits() -> None:
    frames, r = run(config(), stream(2000, lag_ms=60), start_ms=500, stop_ms=1500)
    assert len(frames) == r.ticks
    assert frames[0].state[0] == pytest.approx(0.5)


def test_mismatched_joint_names_name_the_topic() -> None:
    msgs = stream(1000)
    bad = [m for m in msgs if m.topic == LEFT][10]
    bad.msg.name = ["j1", "j2", "j3", "j4", "j5", "j6", "j7"]
    with pytest.raises(RecordingError, match=r"/follower_left/joint_states.*lacks joints"):
        run(config(), msgs, start_ms=100, stop_ms=800)


def test_a_trajectory_for_unknown_joints_is_an_error() -> None:
    msgs = stream(1000)
    msgs.append(
        Message(RCTRL, 400 * MS, trajectory(500 * MS, np.zeros((5, 7)), names=[f"j{i}" for i in range(7)]))
    )
    with pytest.raises(RecordingError, match=r"arm_controller/joint_trajectory.*mismatched joint names"):
        run(config(), msgs, start_ms=100, stop_ms=800)


def test_a_frame_of_another_size_than_the_yaml_is_an_error() -> None:
    msgs = stream(1000)
    frame = next(m for m in msgs if m.topic == CAM and m.log_ns >= 400 * MS)
    frame.msg.width, frame.msg.step, frame.msg.height = 4, 12, 3
    with pytest.raises(RecordingError, match=r"/cam_high/image_raw.*expected 8x6"):
        run(config(), msgs, start_ms=100, stop_ms=800)


def test_an_empty_episode_is_an_error() -> None:
    msgs = [m for m in stream(1000) if m.topic != CAM]
    with pytest.raises(RecordingError, match=r"empty episode"):
        run(config(), msgs, start_ms=100, stop_ms=800)


# ----------------------------------------------------------------------------- the YAML's recording section
def _with_recording(actions: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text()))
    data["ros"]["recording"] = {"actions": actions}
    return data


def test_every_shipped_robot_says_where_its_actions_come_from_or_cannot_be_recorded() -> None:
    from qvla_core.errors import ConfigError
    from qvla_core.robot_io import load_robot_config, recorded_topics

    aloha = recorded_topics(load_robot_config(REPO / "config/robots/aloha.yaml"))
    assert aloha["/leader_left/joint_states"] == "sensor_msgs/msg/JointState"
    assert "/follower_left/arm_controller/joint_trajectory" not in aloha
    franka = recorded_topics(load_robot_config(REPO / "config/robots/franka.yaml"))
    assert franka["/panda_arm_controller/joint_trajectory"] == "trajectory_msgs/msg/JointTrajectory"
    nav = recorded_topics(load_robot_config(REPO / "config/robots/vln_nav.yaml"))
    assert nav["/odom"] == "nav_msgs/msg/Odometry"  # waypoint labels from odometry
    unrecordable = load_robot_config(REPO / "config/robots/vln_nav.yaml")
    unrecordable = unrecordable.model_copy(
        update={"ros": unrecordable.ros.model_copy(update={"recording": None})}
    )
    with pytest.raises(ConfigError, match=r"vln_nav.*no ros.recording"):
        recorded_topics(unrecordable)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a["joint_states"].pop(), r"must fill each action channel once"),
        (
            lambda a: a["joint_states"][0].update(topic="/follower_left/joint_states"),
            r"also observation inputs",
        ),
        (
            lambda a: a["joint_states"][0]["channels"].pop(),
            r"actions.leader_joint_states.joint_states.0.*7 entries but channels has 6",
        ),
        (
            lambda a: a.update(gripper_raw_range={"left_elbow_x": [0, 1]}),
            r"left_elbow_x is not an action channel",
        ),
        (lambda a: a.update(source="telepathy"), r"source"),
    ],
)
def test_a_bad_recording_section_is_refused_naming_the_key(edit: Any, message: str) -> None:
    from qvla_core.errors import ConfigError

    data = copy.deepcopy(yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text()))
    edit(data["ros"]["recording"]["actions"])
    with pytest.raises(ConfigError, match=message):
        parse_model(RobotConfig, data, "aloha.yaml")


def test_commanded_actions_need_trajectory_outputs_for_every_action_channel() -> None:
    from qvla_core.errors import ConfigError

    data = _with_recording({"source": "commanded_trajectory"})
    data["ros"]["outputs"].pop()
    with pytest.raises(
        ConfigError, match=r"commanded_trajectory action source.*must fill each action channel"
    ):
        parse_model(RobotConfig, data, "aloha.yaml")
