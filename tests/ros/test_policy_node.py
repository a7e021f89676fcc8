"""The installed policy node, started with the parameters aloha.launch.py gives it, against a
robot over real DDS: what the controllers receive, and what they never receive."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from qvla_core.robot_io import RobotConfig, TrajectoryOutput, load_robot_config
from qvla_msgs.msg import PolicyStatus
from qvla_msgs.srv import SetInstruction
from qvla_ros.tools.bringup import NodeSpec, policy_node_spec
from tests.ros.fake_robot import FakeRobot, to_sec
from tests.ros.harness import InstalledNode, RosPeer, wait_for
from tests.ros.node_rig import is_hold

pytestmark = pytest.mark.ros

INSTRUCTION = "pick up the cube and hand it over"


def aloha_spec(checkpoint: Path, config_dir: Path, **overrides: str) -> NodeSpec:
    values = {"checkpoint": str(checkpoint), "device": "cpu", "dtype": "float32", "instruction": INSTRUCTION}
    return policy_node_spec(values | overrides, config_dir, default_robot="aloha")


class Rig:
    def __init__(self, node: InstalledNode, peer: RosPeer, robot: FakeRobot, config: RobotConfig) -> None:
        self.node, self.peer, self.robot, self.config = node, peer, robot, config

    def commands(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        return [c for c in self.robot.snapshot().all_trajectories() if c[0] >= since and not is_hold(c[2])]

    def holds(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        return [c for c in self.robot.snapshot().all_trajectories() if c[0] >= since and is_hold(c[2])]

    def wait_commands(self, n: int = 2, since: float = 0.0, timeout: float = 30.0) -> None:
        wait_for(
            lambda: len(self.commands(since)) >= n, timeout, f"{n} trajectories\n{self.node.log()[-2000:]}"
        )

    def status(self) -> PolicyStatus:
        return wait_for(self.robot.last_status, 10.0, "a status message")

    def trigger(self, name: str) -> Any:
        return self.peer.call(self.peer.node.create_client(Trigger, name), Trigger.Request())


@pytest.fixture(scope="module")
def rig(tiny_checkpoint: Path, config_dir: Path) -> Iterator[Rig]:
    spec = aloha_spec(tiny_checkpoint, config_dir)
    config = load_robot_config(spec.parameters["robot_config"])
    node = InstalledNode.from_spec(spec)
    peer = RosPeer("fake_aloha")
    robot = FakeRobot(peer, config)
    rig = Rig(node, peer, robot, config)
    try:
        rig.wait_commands(4, timeout=60.0)
        yield rig
    finally:
        robot.close()
        peer.close()
        code = node.stop()
        log = node.log()
        assert code == 0, f"policy node exited with {code} on SIGINT:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]


def test_controllers_receive_their_joints_in_order_on_the_policy_clock(rig: Rig) -> None:
    since = time.time()
    rig.wait_commands(6, since)
    emb = rig.config.embodiment
    limits = {c.name: (c.lower, c.upper) for c in emb.action}
    raw = rig.config.ros.gripper_raw_range
    # The robot's command is published before the chunk message (observers come second), so the
    # chunk of the newest trajectory may still be on its way: wait for every one.
    stamps = {to_sec(m.header.stamp) for _, _, m in rig.commands(since)}

    def chunks_by_stamp() -> dict[float, Any] | None:
        got = {to_sec(m.header.stamp): m for _, m in rig.robot.snapshot().chunks}
        return got if stamps <= set(got) else None

    chunks = wait_for(chunks_by_stamp, 5.0, "the ActionChunk message of every trajectory")
    for out in rig.config.ros.outputs:
        assert isinstance(out, TrajectoryOutput)
        received = [
            m
            for t, topic, m in rig.commands(since)
            if topic == out.topic and to_sec(m.header.stamp) in stamps
        ]
        assert len(received) >= 2, f"{out.topic} got {len(received)} trajectories"
        starts = [to_sec(m.header.stamp) for m in received]
        assert starts == sorted(starts) and starts[0] > 0.0
        for msg in received:
            assert list(msg.joint_names) == out.joint_names
            assert 1 <= len(msg.points) <= emb.horizon
            for k, point in enumerate(msg.points):
                assert point.time_from_start.sec * 10**9 + point.time_from_start.nanosec == k * 20_000_000
                assert len(point.positions) == len(out.joint_names)
                for joint_value, channel in zip(point.positions, out.channels, strict=True):
                    lo, hi = (min(raw[channel]), max(raw[channel])) if channel in raw else limits[channel]
                    assert math.isfinite(joint_value) and lo - 1e-9 <= joint_value <= hi + 1e-9, channel
            chunk = chunks.get(to_sec(msg.header.stamp))
            assert chunk is not None, (
                "every trajectory comes from a published chunk with the same first-due stamp"
            )
            assert to_sec(chunk.observation_stamp) <= to_sec(msg.header.stamp)
    assert not rig.robot.rejections, rig.robot.rejections  # JTC accepted everything (none wholly in the past)


def test_action_chunk_message_describes_the_chunk(rig: Rig) -> None:
    _, chunk = rig.robot.snapshot().chunks[-1]
    emb = rig.config.embodiment
    assert chunk.embodiment == "aloha" and list(chunk.channel_names) == list(emb.action_names)
    assert list(chunk.shape) == [emb.horizon, 14] and len(chunk.actions) == emb.horizon * 14
    assert chunk.dt == pytest.approx(0.02) and chunk.horizon == emb.horizon
    assert chunk.inference_latency > 0.0


def test_consecutive_chunks_join_without_jumps(rig: Rig) -> None:
    """RTC: where a new trajectory takes over, the robot's target does not jump beyond what the
    velocity limits allow in one control period."""
    since = time.time()
    rig.wait_commands(8, since)
    vmax_step = 3.14 * 0.02
    by_topic: dict[str, list[JointTrajectory]] = {}
    for _, topic, msg in rig.commands(since):
        by_topic.setdefault(topic, []).append(msg)
    for topic, msgs in by_topic.items():
        for prev, new in itertools.pairwise(msgs):
            t = to_sec(new.header.stamp)
            times = np.array([to_sec(prev.header.stamp) + k * 0.02 for k in range(len(prev.points))])
            if t > times[-1]:
                continue
            values = np.array([p.positions for p in prev.points])
            before = np.array([np.interp(t, times, values[:, j]) for j in range(values.shape[1])])
            jump = np.abs(np.array(new.points[0].positions) - before)[:6]  # arm joints (rad)
            assert jump.max() <= 2 * vmax_step + 1e-6, f"{topic}: jump {jump.max():.4f} rad at {t:.3f}"


def test_set_instruction_conditions_the_next_chunks(rig: Rig) -> None:
    client = rig.peer.node.create_client(SetInstruction, "/qvla/set_instruction")
    reply = rig.peer.call(client, SetInstruction.Request(instruction="put the cube in the bowl", reset=True))
    assert reply.success, reply.message
    wait_for(
        lambda: any(c.instruction == "put the cube in the bowl" for _, c in rig.robot.snapshot().chunks[-3:]),
        20.0,
        "a chunk conditioned on the new instruction",
    )
    wait_for(
        lambda: rig.status().instruction == "put the cube in the bowl", 5.0, "status with the instruction"
    )
    for bad, why in (("", "empty"), ("   ", "empty"), ("x" * 1_000_000, "1000000")):
        reply = rig.peer.call(client, SetInstruction.Request(instruction=bad))
        assert not reply.success and why in reply.message, reply.message
    time.sleep(0.5)
    assert rig.status().instruction == "put the cube in the bowl"
    assert rig.node.alive()


def test_stop_holds_latches_and_resume_restarts(rig: Rig) -> None:
    rig.wait_commands(1, time.time())
    t_stop = time.time()
    assert rig.trigger("/qvla/stop").success
    wait_for(
        lambda: len({topic for _, topic, _ in rig.holds(t_stop)}) == 2, 2.0, "a hold on both controllers"
    )
    time.sleep(1.0)
    late = [c for c in rig.commands(t_stop) if c[0] > t_stop + 0.1]
    assert not late, "no command after stop"
    assert rig.status().run_state == PolicyStatus.RUN_STOPPED
    t_resume = time.time()
    assert rig.trigger("/qvla/resume").success
    rig.wait_commands(2, t_resume)


def _wait_hold(rig: Rig, since: float, what: str) -> float:
    holds = wait_for(lambda: rig.holds(since), 5.0, f"a hold after {what}\n{rig.node.log()[-1500:]}")
    return holds[0][0]


def test_stale_camera_holds_within_two_control_periods(rig: Rig) -> None:
    rig.wait_commands(1, time.time())
    rig.robot.paused_inputs.add("cam_high")
    t_last = time.time()  # the last frame was sent at most this late
    try:
        t_hold = _wait_hold(rig, t_last, "cam_high went silent")
        limit = rig.config.ros.safety.max_image_age_s + 2 * rig.config.embodiment.dt
        assert t_hold - t_last <= limit + 0.05, (
            f"hold {t_hold - t_last:.3f} s after the last frame (limit {limit})"
        )
        time.sleep(0.5)
        assert not rig.commands(t_hold + 0.05), "no command computed from stale sensors"
        assert "cam_high" in rig.status().last_fault
    finally:
        rig.robot.paused_inputs.discard("cam_high")
    rig.wait_commands(2, time.time())  # recovers when the camera is back


def _bad_image(kind: str) -> Image | CompressedImage:
    good = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    if kind == "encoding":
        return Image(height=480, width=640, encoding="bayer_rggb8", step=640, data=bytes(640 * 480))
    if kind == "size":
        return Image(height=240, width=320, encoding="rgb8", step=960, data=bytes(240 * 960))
    if kind == "truncated":
        good.data = bytes(640 * 3 * 100)
        return good
    if kind == "empty":
        return Image(height=0, width=0, encoding="rgb8", step=0)
    raise ValueError(kind)


BAD_INPUTS: list[tuple[str, dict[str, Any]]] = [
    ("wrong encoding", {"image": ("cam_low", "encoding")}),
    ("wrong size", {"image": ("cam_low", "size")}),
    ("truncated data", {"image": ("cam_low", "truncated")}),
    ("empty frame", {"image": ("cam_low", "empty")}),
    ("NaN joint", {"state": ("/follower_left/joint_states", "nan")}),
    ("inf joint", {"state": ("/follower_left/joint_states", "inf")}),
    ("missing joint", {"state": ("/follower_right/joint_states", "missing")}),
    ("stamps from the future", {"offset": ("cam_high", 5.0)}),
    ("stamps from the past", {"offset": ("/follower_left/joint_states", -3.0)}),
    ("camera stamps 0.5 s in the future", {"offset": ("cam_left_wrist", 0.5)}),
    ("camera stamps 0.5 s in the past", {"offset": ("cam_left_wrist", -0.5)}),
    ("joint stamps 0.5 s in the future", {"offset": ("/follower_right/joint_states", 0.5)}),
]


@pytest.mark.parametrize("label,bad", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_never_reaches_the_robot(rig: Rig, label: str, bad: dict[str, Any]) -> None:
    robot = rig.robot
    rig.wait_commands(1, time.time())
    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
    if "image" in bad:
        camera, kind = bad["image"]
        robot.image_override[camera] = _bad_image(kind)
    elif "state" in bad:
        topic, kind = bad["state"]
        if kind == "missing":
            robot.state_override[topic] = (names[:-1], [0.0] * 6)
        else:
            robot.state_override[topic] = (names, [0.0, float(kind), 0.0, 0.0, 0.0, 0.0, 0.5])
    else:
        source, offset = bad["offset"]
        robot.stamp_offset[source] = offset
    t_bad = time.time()
    try:
        t_hold = _wait_hold(rig, t_bad, label)
        time.sleep(0.6)
        assert not rig.commands(t_hold + 0.05), f"{label}: a command was computed from bad input"
        assert rig.node.alive()
        status = rig.status()
        assert status.run_state == PolicyStatus.RUN_FAULT and "stale input" in status.last_fault
    finally:
        robot.image_override.clear()
        robot.state_override.clear()
        robot.stamp_offset.clear()
    rig.wait_commands(2, time.time())
    log = rig.node.log()
    assert "rejected input" in log or "stale input" in log


def test_invalid_parameter_updates_are_rejected_with_a_reason(rig: Rig) -> None:
    client = rig.peer.node.create_client(SetParameters, "/qvla_policy/set_parameters")

    def set_param(name: str, value: ParameterValue) -> Any:
        request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)])
        return rig.peer.call(client, request).results[0]

    result = set_param(
        "status_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=1e6)
    )
    assert not result.successful and result.reason
    result = set_param("num_steps", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="ten"))
    assert not result.successful and result.reason
    result = set_param("dtype", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="bfloat16"))
    assert not result.successful and "read-only" in result.reason.lower()
    result = set_param("num_steps", ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=4))
    assert not result.successful and "read-only" in result.reason.lower(), "applied only at configure"
    # status_rate_hz applies while running: 5 Hz -> 20 Hz is visible in /qvla/status
    result = set_param(
        "status_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=20.0)
    )
    assert result.successful
    time.sleep(0.3)
    t0 = time.time()
    time.sleep(1.0)
    statuses = [m for m in rig.robot.snapshot().statuses if to_sec(m.header.stamp) >= t0]
    assert len(statuses) >= 12, f"{len(statuses)} status messages in 1 s at 20 Hz"
    set_param("status_rate_hz", ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=5.0))
    assert rig.node.alive()
    rig.wait_commands(1, time.time())
