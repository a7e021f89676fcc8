"""Navigation labels from odometry (``ros.recording.actions.source: odometry``): the converter's one-step
rows (the next frame's pose in base_link at this frame's instant) and the reader's composition of
them into a frame's waypoints (qvla_core.data.waypoints), against poses worked out by hand."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from types import SimpleNamespace as Ns
from typing import Any

import numpy as np
import pytest
import yaml

from qvla_core.data.mcap_reader import Message, RecordingError
from qvla_core.data.resample import EpisodeResampler, Frame
from qvla_core.data.waypoints import WaypointLayout, compose, relative
from qvla_core.embodiment import parse_model
from qvla_core.errors import ConfigError
from qvla_core.robot_io import RobotConfig, recorded_topics

REPO = Path(__file__).resolve().parents[2]
CAM, ODOM = "/camera/color/image_raw", "/odom"
MS = 1_000_000
W, H = 8, 6


def nav_config(**recording: Any) -> RobotConfig:
    data = copy.deepcopy(yaml.safe_load((REPO / "config/robots/vln_nav.yaml").read_text()))
    data["embodiment"]["cameras"][0].update(width=W, height=H)
    if recording:
        data["ros"]["recording"] = recording
    cfg: RobotConfig = parse_model(RobotConfig, data, "test vln_nav")
    return cfg


def stamped(ns: int) -> Ns:
    return Ns(header=Ns(stamp=Ns(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))


def image(ns: int) -> Any:
    msg = stamped(ns)
    msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian = "rgb8", H, W, 3 * W, 0
    msg.data = bytes([ns // (100 * MS) % 256]) * (3 * W * H)
    return msg


def odometry(ns: int, x: float, y: float, yaw: float) -> Any:
    msg = stamped(ns)
    q = Ns(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    msg.pose = Ns(pose=Ns(position=Ns(x=x, y=y, z=0.0), orientation=q))
    return msg


def arc(t: float) -> tuple[float, float, float]:
    """The hand-made path: from (1, 2) heading 0.3 rad, 0.5 m/s forward while turning 0.2 rad/s."""
    v, w, yaw0 = 0.5, 0.2, 0.3
    yaw = yaw0 + w * t
    return (
        1.0 + v / w * (math.sin(yaw) - math.sin(yaw0)),
        2.0 - v / w * (math.cos(yaw) - math.cos(yaw0)),
        yaw,
    )


def stream(until_ms: int, path: Any = arc, odom_gap: tuple[int, int] | None = None) -> list[Message]:
    """10 Hz camera, 20 Hz odometry along ``path`` (poses at each stamp), logged when stamped."""
    out = []
    for t in range(0, until_ms + 1, 50):
        ns = t * MS
        if not (odom_gap and odom_gap[0] <= t < odom_gap[1]):
            out.append(Message(ODOM, ns, odometry(ns, *path(t / 1000))))
        if t % 100 == 0:
            out.append(Message(CAM, ns, image(ns)))
    return out


def run(cfg: RobotConfig, messages: list[Message], start_ms: int, stop_ms: int) -> list[Frame]:
    r = EpisodeResampler(cfg, "bag-n (episode 0)", start_ms * MS, stop_ms * MS)
    frames = []
    for m in sorted(messages, key=lambda m: m.log_ns):
        r.add(m)
        frames.extend(r.ready(m.log_ns))
    frames.extend(r.finish())
    return frames


ODOM_SOURCE = {"actions": {"source": "odometry", "topic": ODOM}}


def test_the_shipped_nav_yaml_records_its_camera_and_odometry() -> None:
    cfg = nav_config()
    assert recorded_topics(cfg) == {CAM: "sensor_msgs/msg/Image", ODOM: "nav_msgs/msg/Odometry"}


def test_odometry_labels_only_waypoints_from_a_topic_of_their_own() -> None:
    data = yaml.safe_load((REPO / "config/robots/aloha.yaml").read_text())
    data["ros"]["recording"] = ODOM_SOURCE
    with pytest.raises(ConfigError, match="waypoint_x, waypoint_y"):
        parse_model(RobotConfig, data, "aloha with odometry")
    with pytest.raises(ConfigError, match="also an observation input"):
        nav_config(actions={"source": "odometry", "topic": CAM})


def test_each_row_is_the_next_frames_pose_in_base_link_at_this_frame() -> None:
    frames = run(nav_config(**ODOM_SOURCE), stream(9000), start_ms=1000, stop_ms=7000)
    assert [f.stamp_ns // MS for f in frames] == list(range(1000, 7001, 1000))  # 1 Hz waypoint grid
    # Along the arc every 1 s step is the same in the body frame: chord of 0.2 rad at radius 2.5 m.
    r, dyaw = 0.5 / 0.2, 0.2
    step = (r * math.sin(dyaw), r * (1 - math.cos(dyaw)), dyaw)
    for f in frames[:-1]:
        assert f.action == pytest.approx(step, abs=1e-6), f.index
    # The last frame's next pose is the pose at the stop, its own: the base stays.
    assert frames[-1].action == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)


def test_the_frames_instant_is_its_observation_stamp_and_odometry_is_interpolated() -> None:
    # Camera at 10 Hz offset by 30 ms from the ticks; odometry at 20 Hz: poses between samples.
    msgs = [m for m in stream(9000) if m.topic == ODOM]
    msgs += [Message(CAM, (t + 30) * MS, image((t + 30) * MS)) for t in range(0, 9000, 100)]
    frames = run(nav_config(**ODOM_SOURCE), msgs, start_ms=1000, stop_ms=5000)
    # The frame at tick 2 s sees the image of 1.93 s, the next one that of 2.93 s; odometry 50 ms
    # apart is interpolated in between (1.93 s lies between 1.90 and 1.95).
    for f in frames[:-1]:
        s = f.stamp_ns / 1e9 - 0.07
        want = relative(arc(s), [arc(s + 1.0)])[0]
        assert f.action == pytest.approx(want, abs=1e-4), f.index
    want = relative(arc(4.93), [arc(5.0)])[0]  # the last frame: to the pose at the stop
    assert frames[-1].action == pytest.approx(want, abs=1e-4)
    # Not the tick's pose: that would be off by 70 ms of travel (3.5 cm).
    assert abs(frames[0].action[0] - relative(arc(1.0), [arc(2.0)])[0][0]) < 1e-4
    assert np.hypot(*(np.array(arc(0.93)[:2]) - arc(1.0)[:2])) > 0.03


def test_composed_rows_are_the_future_poses_in_base_link_and_the_base_stays_after_the_end() -> None:
    cfg = nav_config(**ODOM_SOURCE)
    frames = run(cfg, stream(14000), start_ms=1000, stop_ms=12000)
    rows = np.stack([f.action for f in frames])
    layout = WaypointLayout(cfg.embodiment)
    horizon = cfg.embodiment.horizon
    assert horizon == 8
    for k in (0, 5, len(rows) - 3):
        chunk = layout.chunk(rows[k : k + horizon], horizon)
        at = [arc(min(1 + k + j + 1, 12)) for j in range(horizon)]  # after the stop (12 s): stays
        want = relative(arc(1 + k), at)
        assert chunk == pytest.approx(want, abs=1e-4), k
    assert layout.chunk(rows[-1:], horizon) == pytest.approx(np.zeros((horizon, 3)), abs=1e-6)


def test_waypoints_beyond_the_limits_stop_short_like_the_expert() -> None:
    layout = WaypointLayout(nav_config().embodiment)
    # Turn round on the spot in 2 steps, then drive 0.6 m/s away: behind the first pose, x < -1 m
    # from the third metre on. Those waypoints repeat the last one inside (-0.6, 0, pi).
    poses = np.array(
        [[0, 0, 0], [0, 0, math.pi / 2], [0, 0, math.pi]] + [[-0.6 * i, 0, math.pi] for i in range(1, 7)]
    )
    steps = np.stack([relative(a, [b])[0] for a, b in itertools.pairwise(poses)])
    chunk = layout.chunk(steps, 8)
    assert chunk[:3, 0] == pytest.approx([0.0, 0.0, -0.6], abs=1e-9)
    assert chunk[3:] == pytest.approx(np.tile(chunk[2], (5, 1)), abs=1e-9)
    assert np.all(np.abs(chunk[:, 2]) <= 3.14159 + 1e-6)  # yaw within the YAML's limits


def test_waypoint_statistics_cover_the_composed_waypoints_not_the_rows() -> None:
    layout = WaypointLayout(nav_config().embodiment)
    steps = np.tile([0.5, 0.0, 0.0], (20, 1))  # straight on at 0.5 m/s
    stats = layout.stats([steps], 8)
    assert stats["max"][0] == pytest.approx(4.0) and stats["min"][0] == pytest.approx(0.5)
    assert stats["q99"][0] > 3.5  # the rows alone would say 0.5


def test_compose_inverts_relative() -> None:
    rng = np.random.default_rng(3)
    origin = rng.normal(size=(1, 3))
    poses = rng.normal(size=(5, 3))
    back = compose(np.repeat(origin, 5, axis=0), relative(origin[0], poses))
    assert back[:, :2] == pytest.approx(poses[:, :2])
    assert np.cos(back[:, 2] - poses[:, 2]) == pytest.approx(np.ones(5))


def test_an_odometry_gap_is_named() -> None:
    msgs = stream(9000, odom_gap=(3000, 4500))
    with pytest.raises(
        RecordingError, match=r"gap at 3.000 s.*/odom at 4.000 s: the newest is 1.050 s old.*max_state_age_s"
    ):
        run(nav_config(**ODOM_SOURCE), msgs, start_ms=1000, stop_ms=7000)


def test_an_odometry_jump_is_refused_not_learned() -> None:
    def jumps(t: float) -> tuple[float, float, float]:
        x, y, yaw = arc(t)
        return (x + (20.0 if t >= 3.5 else 0.0), y, yaw)  # a reset of the odom frame mid-episode

    with pytest.raises(RecordingError, match="jump in the odometry"):
        run(nav_config(**ODOM_SOURCE), stream(9000, path=jumps), start_ms=1000, stop_ms=7000)
