"""The goals qvla builds for Nav2's actions, for each shape the installed nav2_msgs may have.

Kilted's definitions are installed here (built from ../shared/ros2-extras) and tested for real, down
to the serialized bytes; Jazzy's and Rolling's NavigateThroughPoses goals are stand-in classes with
their field layouts as rosidl generates them (``get_fields_and_field_types()``, ``SLOT_TYPES``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
nav2 = pytest.importorskip("nav2_msgs.action", reason="nav2_msgs not built: run scripts/setup.sh")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from pydantic import ValidationError  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from qvla_core.errors import OutputError  # noqa: E402
from qvla_core.robot_io import PoseOutput  # noqa: E402
from qvla_ros.io.nav2 import goal_builder, pose_list_setter  # noqa: E402

ROWS = np.array([[0.5, 0.1, 0.2], [1.0, 0.3, 0.4], [1.5, -0.2, -3.0]])
STAMP = 1234.5


def _check_poses(
    header: Header, poses: list[PoseStamped], rows: np.ndarray, frame: str = "base_link"
) -> None:
    assert header.frame_id == frame
    assert header.stamp.sec == 1234 and header.stamp.nanosec == 500_000_000
    assert len(poses) == len(rows)
    for pose, (x, y, yaw) in zip(poses, rows, strict=True):
        assert pose.header == header
        assert (pose.pose.position.x, pose.pose.position.y, pose.pose.position.z) == (x, y, 0.0)
        q = pose.pose.orientation
        assert 2.0 * math.atan2(q.z, q.w) == pytest.approx(yaw)


def _roundtrip(msg: Any) -> Any:
    """Through CDR and back: what goes over DDS (the original fault: the goal could not be serialized)."""
    return deserialize_message(serialize_message(msg), type(msg))


# ----------------------------------------------------------------- Kilted, installed
def test_kilted_navigate_through_poses_fills_nav_msgs_goals() -> None:
    goal_type = nav2.NavigateThroughPoses.Goal
    assert goal_type.get_fields_and_field_types()["poses"] == "nav_msgs/Goals"  # what is installed
    spec = PoseOutput(type="navigate_through_poses", topic="/navigate_through_poses", behavior_tree="bt.xml")
    goal = _roundtrip(goal_builder(goal_type, spec)(ROWS, STAMP))
    _check_poses(goal.poses.header, list(goal.poses.goals), ROWS)
    assert goal.behavior_tree == "bt.xml"


def test_kilted_follow_path_carries_the_path_and_the_plugin_ids() -> None:
    spec = PoseOutput(
        type="follow_path",
        topic="/follow_path",
        frame_id="base_footprint",
        controller_id="FollowPath",
        goal_checker_id="precise_goal_checker",
        progress_checker_id="progress_checker",
    )
    goal = _roundtrip(goal_builder(nav2.FollowPath.Goal, spec)(ROWS, STAMP))
    _check_poses(goal.path.header, list(goal.path.poses), ROWS, "base_footprint")
    assert (goal.controller_id, goal.goal_checker_id, goal.progress_checker_id) == (
        "FollowPath",
        "precise_goal_checker",
        "progress_checker",
    )


def test_kilted_navigate_to_pose_goes_to_the_last_waypoint() -> None:
    spec = PoseOutput(type="navigate_to_pose", topic="/navigate_to_pose")
    goal = _roundtrip(goal_builder(nav2.NavigateToPose.Goal, spec)(ROWS, STAMP))
    _check_poses(goal.pose.header, [goal.pose], ROWS[-1:])
    assert goal.behavior_tree == ""


# ----------------------------------------------------------------- Jazzy and Rolling, stand-ins
class _Message:
    """A rosidl-generated message as far as qvla reads it: fields with their type strings."""

    FIELDS: ClassVar[dict[str, str]] = {}
    SLOT_TYPES: ClassVar[tuple[str, ...]] = ()
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, **values: Any) -> None:
        for name in self.FIELDS:
            default = self.DEFAULTS.get(name, "")
            setattr(self, name, values.get(name, default() if callable(default) else default))

    @classmethod
    def get_fields_and_field_types(cls) -> dict[str, str]:
        return dict(cls.FIELDS)


class JazzyGoal(_Message):
    """nav2_msgs/action/NavigateThroughPoses goal in Jazzy: geometry_msgs/PoseStamped[] poses."""

    FIELDS: ClassVar = {"poses": "sequence<geometry_msgs/PoseStamped>", "behavior_tree": "string"}
    SLOT_TYPES: ClassVar = ("UnboundedSequence(NamespacedType(geometry_msgs/PoseStamped))", "UnboundedString")
    DEFAULTS: ClassVar = {"poses": list}


class PoseStampedArray(_Message):
    """nav2_msgs/msg/PoseStampedArray in Rolling: header, poses."""

    FIELDS: ClassVar = {"header": "std_msgs/Header", "poses": "sequence<geometry_msgs/PoseStamped>"}
    SLOT_TYPES: ClassVar = ("NamespacedType(std_msgs/Header)", "UnboundedSequence(PoseStamped)")
    DEFAULTS: ClassVar = {"header": Header, "poses": list}


class RollingGoal(_Message):
    FIELDS: ClassVar = {"poses": "nav2_msgs/PoseStampedArray", "behavior_tree": "string"}
    SLOT_TYPES: ClassVar = ("NamespacedType(nav2_msgs/PoseStampedArray)", "UnboundedString")
    DEFAULTS: ClassVar = {"poses": PoseStampedArray}


class JazzyFollowPathGoal(_Message):
    """FollowPath before progress_checker_id existed."""

    FIELDS: ClassVar = {"path": "nav_msgs/Path", "controller_id": "string", "goal_checker_id": "string"}
    DEFAULTS: ClassVar = {"path": None}


def test_jazzy_navigate_through_poses_takes_the_list() -> None:
    spec = PoseOutput(type="navigate_through_poses", topic="/navigate_through_poses")
    goal = goal_builder(JazzyGoal, spec)(ROWS, STAMP)
    assert isinstance(goal.poses, list)
    _check_poses(goal.poses[0].header, goal.poses, ROWS)


def test_rolling_navigate_through_poses_fills_pose_stamped_array() -> None:
    spec = PoseOutput(type="navigate_through_poses", topic="/navigate_through_poses")
    goal = goal_builder(RollingGoal, spec)(ROWS, STAMP)
    assert isinstance(goal.poses, PoseStampedArray)
    _check_poses(goal.poses.header, goal.poses.poses, ROWS)


def test_an_unknown_goal_layout_is_refused_with_its_fields() -> None:
    class Strange(_Message):
        FIELDS: ClassVar = {"header": "std_msgs/Header", "points": "sequence<geometry_msgs/Point>"}

    class StrangeGoal(_Message):
        FIELDS: ClassVar = {"poses": "some_msgs/Strange"}
        DEFAULTS: ClassVar = {"poses": Strange}

    with pytest.raises(OutputError, match=r"StrangeGoal\.poses is a some_msgs/Strange.*points"):
        pose_list_setter(StrangeGoal, "poses")
    with pytest.raises(OutputError, match="has no field 'goals'"):
        pose_list_setter(JazzyGoal, "goals")


def test_a_plugin_id_the_installed_goal_lacks_is_refused_only_when_set() -> None:
    plain = PoseOutput(type="follow_path", topic="/follow_path", controller_id="FollowPath")
    goal_builder(JazzyFollowPathGoal, plain)  # progress_checker_id unset: fine before Kilted
    spec = PoseOutput(type="follow_path", topic="/follow_path", progress_checker_id="progress_checker")
    with pytest.raises(OutputError, match="progress_checker_id is set but the installed nav2_msgs goal"):
        goal_builder(JazzyFollowPathGoal, spec)


@pytest.mark.parametrize(
    ("kind", "option"),
    [("goal_pose", "behavior_tree"), ("follow_path", "behavior_tree"), ("navigate_to_pose", "controller_id")],
)
def test_options_of_another_output_type_are_refused(kind: str, option: str) -> None:
    with pytest.raises(ValidationError, match=f"{option} do not apply to this type"):
        PoseOutput.model_validate({"type": kind, "topic": "/x", option: "something"})
