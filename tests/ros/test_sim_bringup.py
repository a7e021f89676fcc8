"""What the sim demo starts and reports: node specs, command lines, chunk messages, the report files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from qvla_core.policy import ActionChunk  # noqa: E402
from qvla_core.robot_io import load_robot_config  # noqa: E402
from qvla_ros.io import conversions as conv  # noqa: E402
from qvla_ros.nodes.sim_node import SIM_CHANNELS  # noqa: E402
from qvla_ros.tools.bringup import NodeSpec, sim_demo_specs  # noqa: E402
from qvla_ros.tools.demo_report import commanded_rows, latency_plot, sim_rows, summary_table  # noqa: E402
from qvla_ros.tools.node_process import command_line  # noqa: E402
from qvla_ros.tools.sim_monitor import ChunkRecord, CommandRecord, EpisodeResult  # noqa: E402
from tests.ros.harness import REPO  # noqa: E402

CONFIG_DIR = REPO / "config" / "robots"


def test_sim_demo_runs_both_nodes_on_sim_time_with_one_robot_yaml(tmp_path: Path) -> None:
    sim, policy = sim_demo_specs(
        {"policy": "expert_transfer_cube", "image_width": "160", "seed": "3", "use_sim_time": "false"},
        CONFIG_DIR,
        variant_dir=tmp_path,
    )
    assert (sim.executable, policy.executable) == ("sim_node", "policy_node")
    assert policy.parameters["use_sim_time"] is True, "the sim owns time: the policy must follow /clock"
    # another image size than the YAML's: both nodes run a copy of it with the cameras at that size
    variant = tmp_path / "aloha_160x480.yaml"
    assert sim.parameters["robot_config"] == policy.parameters["robot_config"] == str(variant)
    cameras = load_robot_config(variant).embodiment.cameras
    assert {(c.width, c.height) for c in cameras} == {(160, 480)}
    assert sim.parameters["image_width"] == 160 and sim.parameters["seed"] == 3
    assert sim.parameters["image_height"] == 480 and sim.parameters["real_time_factor"] == 1.0
    assert policy.parameters["policy"] == "expert_transfer_cube"
    sim, policy = sim_demo_specs({}, CONFIG_DIR, variant_dir=tmp_path / "unused")
    assert (
        sim.parameters["robot_config"] == policy.parameters["robot_config"] == str(CONFIG_DIR / "aloha.yaml")
    )
    assert (sim.parameters["image_width"], sim.parameters["image_height"]) == (640, 480)
    assert not (tmp_path / "unused").exists()
    with pytest.raises(FileNotFoundError, match="known robots"):
        sim_demo_specs({"robot_config": "no_such_robot"}, CONFIG_DIR)


def test_command_line_is_what_launch_ros_runs(tmp_path: Path) -> None:
    spec = NodeSpec("qvla_ros", "sim_node", "qvla_sim", namespace="lab", remappings=(("a", "b"),))
    args = command_line(spec, tmp_path / "p.yaml", Path("/x/lib/qvla_ros/sim_node"))
    assert args == [
        "/x/lib/qvla_ros/sim_node", "--ros-args", "--log-level", "info", "-r", "__node:=qvla_sim",
        "-r", "__ns:=lab", "-r", "a:=b", "--params-file", str(tmp_path / "p.yaml"),
    ]  # fmt: skip


def test_action_chunk_message_round_trip_and_bad_shape() -> None:
    actions = np.arange(12, dtype=np.float32).reshape(4, 3)
    chunk = ActionChunk(actions=actions, channel_names=("a", "b", "c"), dt=0.02, observation_stamp=5.0)
    msg = conv.action_chunk_msg(chunk, "robot", "go", first_due=5.06)
    obs, due, names, back, _ = conv.action_chunk_arrays(msg)
    assert (obs, names) == (5.0, ["a", "b", "c"]) and due == pytest.approx(5.06)
    np.testing.assert_array_equal(back, actions)
    msg.shape = [3, 4]
    with pytest.raises(ValueError, match="does not fit"):
        conv.action_chunk_arrays(msg)


def test_report_reorders_channels_and_writes_table_and_plot(tmp_path: Path) -> None:
    names = ["right_a", "left_a"]
    rec = ChunkRecord(1.0, 1.02, names, np.array([[1.0, 2.0], [3.0, 4.0]]), 0.03, 1.05, 10.0, {"plan": 0.02})
    np.testing.assert_array_equal(sim_rows(rec, ("left_a", "right_a")), [[2.0, 1.0], [4.0, 3.0]])
    with pytest.raises(ValueError, match="left_b"):
        sim_rows(rec, ("left_b",))
    result = EpisodeResult(7, True, False, 3.9, 4, 10, 20, 31.0, 0.0, 5.0)
    table = summary_table([result])
    assert "| 1 | 7 | yes | no | 3.90 | 4 | 10 | 20 | 31.0 |" in table
    later = ChunkRecord(1.1, 1.12, names, rec.actions, 0.05, 1.15, 10.1, {"plan": 0.04})
    png = latency_plot([rec, later], tmp_path / "latency.png", "t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_commanded_rows_join_both_controllers_in_sim_order_with_normalised_grippers() -> None:
    config = load_robot_config(CONFIG_DIR / "aloha.yaml")
    names = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
    closed, opened = config.ros.gripper_raw_range["left_gripper"]
    left = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, opened], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, closed]])
    right = -left[:, :6]
    right = np.hstack([right, left[:, 6:]])
    cmds = [
        CommandRecord(
            1.0, 1.0, "/follower_left/arm_controller/joint_trajectory", 5.0, names, [0.0, 0.02], left
        ),
        CommandRecord(
            1.0, 1.0, "/follower_right/arm_controller/joint_trajectory", 5.0, names, [0.0, 0.02], right
        ),
    ]
    rows = commanded_rows(cmds, config, 5.0, SIM_CHANNELS)
    assert rows is not None and rows.shape == (2, 14)
    np.testing.assert_allclose(rows[:, :6], left[:, :6])
    np.testing.assert_allclose(rows[:, 7:13], right[:, :6])
    np.testing.assert_allclose(rows[:, 6], [1.0, 0.0], atol=1e-9)  # raw open/closed -> 1/0
    assert commanded_rows(cmds[:1], config, 5.0, SIM_CHANNELS) is None, "one controller is not a command"
    assert commanded_rows(cmds, config, 6.0, SIM_CHANNELS) is None
