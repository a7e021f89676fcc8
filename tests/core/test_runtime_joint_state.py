"""JointState merging by name into the ALOHA state order, gripper scaling, and bad messages."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qvla_core.errors import ConfigError, ObservationError
from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_core.runtime.joint_state import GripperScaling, JointStateMerger

ALOHA = Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml"
LEFT, RIGHT = "/follower_left/joint_states", "/follower_right/joint_states"
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
CLOSED, OPEN = -0.6213, 1.4910


@pytest.fixture(scope="module")
def config() -> RobotConfig:
    return load_robot_config(ALOHA)


@pytest.fixture
def merger(config: RobotConfig) -> JointStateMerger:
    return JointStateMerger(config)


def arm(offset: float, gripper_raw: float) -> list[float]:
    return [offset + 0.1 * i for i in range(6)] + [gripper_raw]


def test_merges_two_topics_in_state_order(merger: JointStateMerger) -> None:
    # Driver order differs from the config and carries an extra joint: mapped by name.
    names = ["gripper", "extra_joint", *JOINTS[:6]]
    left = arm(0.0, OPEN)
    merger.update(LEFT, names, [left[6], 99.0, *left[:6]], stamp=10.00)
    merger.update(RIGHT, JOINTS, np.array(arm(1.0, CLOSED)), stamp=10.01)
    state, oldest = merger.state(now=10.05)
    assert state.dtype == np.float32 and state.shape == (14,)
    expected = [*arm(0.0, 1.0)[:6], 1.0, *arm(1.0, 0.0)[:6], 0.0]
    np.testing.assert_allclose(state, expected, atol=1e-6)
    assert oldest == 10.00


def test_gripper_mapping_round_trips(merger: JointStateMerger) -> None:
    middle = (CLOSED + OPEN) / 2
    merger.update(LEFT, JOINTS, arm(0.0, middle), 1.0)
    merger.update(RIGHT, JOINTS, arm(0.0, middle), 1.0)
    state, _ = merger.state(1.0)
    assert state[6] == pytest.approx(0.5) and state[13] == pytest.approx(0.5)
    assert merger.to_hardware("left_gripper", 0.0) == pytest.approx(CLOSED)
    assert merger.to_hardware("left_gripper", 1.0) == pytest.approx(OPEN)
    assert merger.to_hardware("left_waist", 0.25) == 0.25  # not a gripper: unchanged
    scaling = GripperScaling({"g": (2.0, 0.0)})  # reversed hardware direction works too
    assert scaling.to_normalised("g", scaling.to_hardware("g", 0.3)) == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="two different finite values"):
        GripperScaling({"g": (1.0, 1.0)})


def test_state_before_every_topic_arrived_is_an_error(merger: JointStateMerger) -> None:
    with pytest.raises(ObservationError, match="no joint state received yet"):
        merger.state(0.0)
    merger.update(LEFT, JOINTS, arm(0.0, 0.0), 0.0)
    with pytest.raises(ObservationError, match=RIGHT):
        merger.state(0.0)


def test_stale_state_is_an_error(merger: JointStateMerger) -> None:
    merger.update(LEFT, JOINTS, arm(0.0, 0.0), 1.0)
    merger.update(RIGHT, JOINTS, arm(0.0, 0.0), 1.5)
    with pytest.raises(ObservationError, match=r"stale .*follower_left"):
        merger.state(1.55)  # ALOHA's max_state_age_s is 0.1
    _, oldest = merger.state(1.55, max_age_s=math.inf)
    assert oldest == 1.0


BadMessage = tuple[str, list[str], list[float], float, str]  # topic, names, positions, stamp, error


@pytest.mark.parametrize(
    "case",
    [
        ("/nope/joint_states", JOINTS, arm(0, 0), 1.0, "unknown topic /nope/joint_states"),
        (LEFT, JOINTS, arm(0, 0)[:6], 1.0, "7 names but 6 positions"),
        (LEFT, JOINTS[:6], arm(0, 0)[:6], 1.0, r"lacks joints \['gripper'\]"),
        (LEFT, [*JOINTS, "waist"], [*arm(0, 0), 0.0], 1.0, r"joint names repeat .*waist"),
        (LEFT, JOINTS, [*arm(0, 0)[:2], math.nan, *arm(0, 0)[3:]], 1.0, r"non-finite .*'elbow': nan"),
        (LEFT, JOINTS, [*arm(0, 0)[:6], math.inf], 1.0, r"non-finite .*'gripper': inf"),
        (LEFT, JOINTS, arm(0, 0), math.nan, "stamp is not finite"),
        (LEFT, JOINTS, arm(0, 0), 0.5, "older than the last accepted"),
    ],
)
def test_bad_messages_are_rejected_and_change_nothing(merger: JointStateMerger, case: BadMessage) -> None:
    merger.update(LEFT, JOINTS, arm(0.0, CLOSED), 0.9)
    merger.update(RIGHT, JOINTS, arm(0.0, CLOSED), 0.9)
    before, _ = merger.state(0.9)
    topic, names, positions, stamp, message = case
    with pytest.raises(ObservationError, match=message):
        merger.update(topic, names, positions, stamp)
    after, oldest = merger.state(0.9)
    np.testing.assert_array_equal(before, after)
    assert oldest == 0.9


def test_nan_in_an_unmapped_joint_is_ignored(merger: JointStateMerger) -> None:
    merger.update(LEFT, [*JOINTS, "camera_tilt"], [*arm(0.0, 0.0), math.nan], 1.0)
    merger.update(RIGHT, JOINTS, arm(0.0, 0.0), 1.0)  # same stamp on another topic is fine
    merger.update(RIGHT, JOINTS, arm(0.0, 0.0), 1.0)  # and a repeat on the same topic
    state, _ = merger.state(1.0)
    assert np.isfinite(state).all()
