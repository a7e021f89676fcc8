"""Robot YAML validation: every shipped robot loads; broken files name the file, key and value."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from qvla_core.embodiment import ChannelKind, load_embodiment
from qvla_core.errors import ConfigError
from qvla_core.robot_io import PoseOutput, TrajectoryOutput, load_robot_config

REPO = Path(__file__).resolve().parents[2]
ROBOTS = sorted((REPO / "config" / "robots").glob("*.yaml"))
ALOHA = REPO / "config" / "robots" / "aloha.yaml"


@pytest.mark.parametrize("path", ROBOTS, ids=[p.stem for p in ROBOTS])
def test_every_shipped_robot_loads(path: Path) -> None:
    config = load_robot_config(path)
    emb = config.embodiment
    assert emb.name == path.stem
    assert emb.horizon >= 1 and emb.dt == pytest.approx(1.0 / emb.control_rate_hz)
    for out in config.ros.outputs:
        if isinstance(out, TrajectoryOutput):
            assert set(out.channels) <= set(emb.action_names)
        else:
            kinds = set(emb.channel_kinds())
            assert {ChannelKind.waypoint_x, ChannelKind.waypoint_y} <= kinds


def test_aloha_matches_the_interbotix_conventions() -> None:
    config = load_robot_config(ALOHA)
    emb = config.embodiment
    assert emb.camera_names == ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
    assert len(emb.action) == 14 and emb.control_rate_hz == 50.0
    assert emb.action_names[:7] == tuple(
        f"left_{j}"
        for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
    )
    assert [c.kind for c in emb.action].count(ChannelKind.gripper) == 2
    assert [j.topic for j in config.ros.joint_states] == [
        "/follower_left/joint_states",
        "/follower_right/joint_states",
    ]


def _aloha_data() -> dict[str, Any]:
    data = yaml.safe_load(ALOHA.read_text())
    assert isinstance(data, dict)
    return data


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _mutations() -> list[tuple[str, Any, list[str]]]:
    def drop_horizon(d: dict[str, Any]) -> None:
        del d["embodiment"]["horizon"]

    def rate_as_text(d: dict[str, Any]) -> None:
        d["embodiment"]["control_rate_hz"] = "fast"

    def inverted_limits(d: dict[str, Any]) -> None:
        d["embodiment"]["action"][2] = {**d["embodiment"]["action"][2], "lower": 2.0, "upper": -2.0}

    def unknown_output(d: dict[str, Any]) -> None:
        d["ros"]["outputs"][0]["type"] = "teleport"

    def typo_key(d: dict[str, Any]) -> None:
        d["embodiment"]["horizn"] = 10

    def missing_camera_topic(d: dict[str, Any]) -> None:
        d["ros"]["cameras"].pop()

    def unfed_state(d: dict[str, Any]) -> None:
        d["ros"]["joint_states"].pop()

    def nan_limit(d: dict[str, Any]) -> None:
        d["embodiment"]["action"][0] = {**d["embodiment"]["action"][0], "upper": float("nan")}

    return [
        ("missing key", drop_horizon, ["embodiment.horizon", "Field required"]),
        ("wrong type", rate_as_text, ["embodiment.control_rate_hz", "'fast'"]),
        (
            "inverted limits",
            inverted_limits,
            ["embodiment.action.2", "lower (2.0) must be below upper (-2.0)"],
        ),
        ("unknown output", unknown_output, ["ros.outputs.0", "'teleport'"]),
        ("typo", typo_key, ["embodiment.horizn", "Extra inputs"]),
        ("camera without topic", missing_camera_topic, ["cam_right_wrist"]),
        ("state channel without topic", unfed_state, ["right_waist"]),
        ("nan limit", nan_limit, ["embodiment.action.0", "finite"]),
    ]


@pytest.mark.parametrize("label,mutate,expected", _mutations(), ids=[m[0] for m in _mutations()])
def test_broken_yaml_names_file_key_and_value(
    tmp_path: Path, label: str, mutate: Any, expected: list[str]
) -> None:
    data = copy.deepcopy(_aloha_data())
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_robot_config(path)
    message = str(err.value)
    assert str(path) in message, message
    for fragment in expected:
        assert fragment in message, f"{label}: {fragment!r} not in {message!r}"


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read robot config"):
        load_robot_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("embodiment: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_robot_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_robot_config(bad)


def test_load_embodiment_alone_and_missing_section(tmp_path: Path) -> None:
    emb = load_embodiment(ALOHA)
    assert emb.name == "aloha"
    path = _write(tmp_path, {"ros": {}})
    with pytest.raises(ConfigError, match="embodiment: missing key"):
        load_embodiment(path)


def test_normalization_width_must_match_channels(tmp_path: Path) -> None:
    data = _aloha_data()
    data["embodiment"]["normalization"] = {
        "state": {"mode": "mean_std", "mean": [0.0] * 14, "std": [1.0] * 14},
        "action": {"mode": "quantile", "q01": [-1.0] * 13, "q99": [1.0] * 13},
    }
    with pytest.raises(ConfigError, match=r"normalization\.action has 13 values for 14 channels"):
        load_robot_config(_write(tmp_path, data))


def test_pose_output_defaults_to_base_link() -> None:
    out = PoseOutput(type="goal_pose", topic="/goal_pose")
    assert out.frame_id == "base_link"


VLN = REPO / "config" / "robots" / "vln_nav.yaml"
FRANKA = REPO / "config" / "robots" / "franka.yaml"
WIDOWX = REPO / "config" / "robots" / "widowx.yaml"


def test_vln_nav_sees_a_video_history_and_sends_poses_in_base_link() -> None:
    config = load_robot_config(VLN)
    emb = config.embodiment
    assert [c.history.frames for c in emb.cameras] == [8]
    assert all(c.history.frames > 1 and c.history.stride_s > 0 for c in emb.cameras)
    assert emb.state == [] and config.ros.joint_states == []
    assert set(emb.channel_kinds()) == {
        ChannelKind.waypoint_x,
        ChannelKind.waypoint_y,
        ChannelKind.waypoint_yaw,
    }
    # max_velocity would be applied per waypoint step by the safety filter: it must stay unset.
    assert all(c.max_velocity is None for c in emb.action)
    outputs = config.ros.outputs
    assert outputs and all(isinstance(o, PoseOutput) and o.frame_id == "base_link" for o in outputs)
    assert {o.type for o in outputs if isinstance(o, PoseOutput)} == {"goal_pose", "path"}
    assert config.ros.chunking.mode == "replace"


@pytest.mark.parametrize("path", [FRANKA, WIDOWX], ids=["franka", "widowx"])
def test_arm_and_gripper_outputs_cover_every_action_channel_once(path: Path) -> None:
    config = load_robot_config(path)
    trajectories = [o for o in config.ros.outputs if isinstance(o, TrajectoryOutput)]
    assert len(trajectories) == len(config.ros.outputs) == 2
    commanded = [ch for o in trajectories for ch in o.channels]
    assert sorted(commanded) == sorted(config.embodiment.action_names)
    gripper_out = [o for o in trajectories if o.channels == ["gripper"]]
    assert len(gripper_out) == 1


def test_franka_follows_the_panda_names() -> None:
    config = load_robot_config(FRANKA)
    arm = config.ros.outputs[0]
    assert isinstance(arm, TrajectoryOutput)
    assert arm.joint_names == [f"panda_joint{i}" for i in range(1, 8)]
    assert config.ros.gripper_raw_range == {"gripper": (0.0, 0.04)}
    fed = {name for src in config.ros.joint_states for name in src.joint_names}
    assert fed == {*arm.joint_names, "panda_finger_joint1"}


@pytest.mark.parametrize("path", [FRANKA, WIDOWX], ids=["franka", "widowx"])
def test_arm_limits_are_plausible_and_grippers_normalised(path: Path) -> None:
    config = load_robot_config(path)
    emb = config.embodiment
    for ch in (*emb.state, *emb.action):
        if ch.kind == ChannelKind.joint_position:
            assert -2 * math.pi <= ch.lower < ch.upper <= 2 * math.pi, ch
            assert ch.max_velocity is not None and 0 < ch.max_velocity <= 2 * math.pi, ch
        else:
            assert ch.kind == ChannelKind.gripper, ch
            assert (ch.lower, ch.upper) == (0.0, 1.0), ch
    grippers = {c.name for c in emb.action if c.kind == ChannelKind.gripper}
    assert set(config.ros.gripper_raw_range) == grippers
    for closed, opened in config.ros.gripper_raw_range.values():
        assert closed < opened
