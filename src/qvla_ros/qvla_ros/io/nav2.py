"""Nav2 action outputs (nav2_msgs): goals built for the installed interface definitions, each new plan
pre-empting the previous goal as Nav2's own clients do, and every goal still running cancelled on a
hold.

The goal of NavigateThroughPoses changed shape across distributions: Jazzy's is
``geometry_msgs/PoseStamped[] poses``, Kilted's ``nav_msgs/Goals poses`` (``header``, ``goals``),
Rolling's ``nav2_msgs/PoseStampedArray poses`` (``header``, ``poses``). The shape is read from the
installed message class (rosidl's ``get_fields_and_field_types()``), never from the distribution's
name, so a backport or a newer Nav2 works as long as the field is one of these layouts.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from action_msgs.msg import GoalStatus
from geometry_msgs.msg import PoseStamped
from rclpy.action.client import ActionClient
from rclpy.node import Node
from std_msgs.msg import Header

from qvla_core.errors import OutputError
from qvla_core.robot_io import PoseOutput
from qvla_ros.io import conversions as conv

# output type -> nav2_msgs action
ACTIONS = {
    "navigate_through_poses": "NavigateThroughPoses",
    "navigate_to_pose": "NavigateToPose",
    "follow_path": "FollowPath",
}
POSE_SEQUENCE = "sequence<geometry_msgs/PoseStamped"  # a bounded one ends in ", N>", unbounded in ">"
_TERMINAL = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED)
# Goals remembered for a hold's cancel: Nav2 aborts a pre-empted goal, which prunes it; this bounds
# the list if a server stops answering altogether.
_MAX_TRACKED = 16

GoalBuilder = Callable[[np.ndarray, float], Any]
PoseSetter = Callable[[Any, Header, list[PoseStamped]], None]


def nav2_action(output_type: str, where: str) -> Any:
    """The nav2_msgs action class of an output type; OutputError if nav2_msgs is not installed."""
    try:
        import nav2_msgs.action as actions
    except ImportError as exc:
        raise OutputError(
            f"{where}: output type {output_type} needs nav2_msgs (install ros-$ROS_DISTRO-nav2-msgs), "
            "or use output type goal_pose or path"
        ) from exc
    return getattr(actions, ACTIONS[output_type])


def pose_list_setter(goal_type: Any, field: str) -> PoseSetter:
    """How to put a list of PoseStamped into ``goal_type``'s ``field``: as the list itself
    (``PoseStamped[]``) or into a message with a ``header`` and one PoseStamped sequence (Kilted's
    nav_msgs/Goals ``goals``, Rolling's nav2_msgs/PoseStampedArray ``poses``). Raises OutputError
    naming the layout when it is none of these."""
    fields: dict[str, str] = goal_type.get_fields_and_field_types()
    kind = fields.get(field)
    name = getattr(goal_type, "__qualname__", str(goal_type))
    if kind is None:
        raise OutputError(f"{name} has no field {field!r} (its fields: {sorted(fields)})")
    if kind.startswith(POSE_SEQUENCE):

        def set_list(goal: Any, header: Header, poses: list[PoseStamped]) -> None:
            setattr(goal, field, poses)

        return set_list
    inner: dict[str, str] = type(getattr(goal_type(), field)).get_fields_and_field_types()
    sequences = [n for n, t in inner.items() if t.startswith(POSE_SEQUENCE)]
    if inner.get("header") != "std_msgs/Header" or len(sequences) != 1:
        raise OutputError(
            f"{name}.{field} is a {kind} with fields {inner}: qvla knows PoseStamped[], or a message "
            "with a std_msgs/Header header and one PoseStamped sequence; update qvla_ros.io.nav2"
        )
    member = sequences[0]

    def set_wrapped(goal: Any, header: Header, poses: list[PoseStamped]) -> None:
        wrapper = getattr(goal, field)
        wrapper.header = header
        setattr(wrapper, member, poses)

    return set_wrapped


def goal_builder(goal_type: Any, spec: PoseOutput) -> GoalBuilder:
    """rows (n, 3) x, y, yaw in spec.frame_id at the observation stamp -> a goal of ``goal_type``."""
    fields = goal_type.get_fields_and_field_types()
    options = {"behavior_tree": spec.behavior_tree}
    if spec.type == "follow_path":
        options = {
            "controller_id": spec.controller_id,
            "goal_checker_id": spec.goal_checker_id,
            "progress_checker_id": spec.progress_checker_id,
        }
    # An option the installed goal lacks (progress_checker_id before Kilted) is an error only if set.
    missing = [k for k, v in options.items() if v and k not in fields]
    if missing:
        raise OutputError(
            f"output {spec.topic}: {', '.join(missing)} is set but the installed nav2_msgs goal "
            f"{goal_type.__qualname__} has no such field (fields: {sorted(fields)})"
        )
    options = {k: v for k, v in options.items() if k in fields}
    frame = spec.frame_id
    if spec.type == "navigate_through_poses":
        set_poses = pose_list_setter(goal_type, "poses")

        def through_poses(rows: np.ndarray, stamp: float) -> Any:
            goal = goal_type(**options)
            set_poses(
                goal,
                Header(stamp=conv.to_time(stamp), frame_id=frame),
                conv.waypoint_poses(rows, stamp, frame),
            )
            return goal

        return through_poses
    if spec.type == "navigate_to_pose":
        return lambda rows, stamp: goal_type(pose=conv.waypoint_poses(rows[-1:], stamp, frame)[0], **options)
    if spec.type == "follow_path":
        return lambda rows, stamp: goal_type(path=conv.waypoint_path(rows, stamp, frame), **options)
    raise OutputError(f"output {spec.topic}: {spec.type} is not a Nav2 action")


@dataclass
class _Goal:
    """One sent goal: its send future, then its handle once the server answered."""

    future: Any
    handle: Any = None
    answered: bool = False
    cancel_requested: bool = False

    def finished(self) -> bool:
        if not self.answered:
            return False
        return self.handle is None or self.handle.status in _TERMINAL


class ActionOutput:
    """One Nav2 action as a robot output. ``send`` raises OutputError when no server is there, or when
    the server rejected the previous goal (that goal went nowhere: the engine reports it and holds,
    and the next plan is sent again)."""

    def __init__(self, node: Node, spec: PoseOutput) -> None:
        self.spec = spec
        self._what = f"{spec.type} {spec.topic}"
        action = nav2_action(spec.type, self._what)
        self._build = goal_builder(action.Goal, spec)
        self._client: Any = ActionClient(node, action, spec.topic)
        self._lock = threading.Lock()
        self._goals: list[_Goal] = []  # sent and maybe still running, newest last
        self._problem = ""  # why the last goal went nowhere, reported by the next send

    def send(self, rows: np.ndarray, stamp: float) -> None:
        goal = self._build(rows, stamp)
        if not self._client.server_is_ready():
            raise OutputError(
                f"{self._what}: no action server (is Nav2 running and active?); the plan was not sent"
            )
        with self._lock:
            problem, self._problem = self._problem, ""
            self._goals = [g for g in self._goals if not g.finished()][-_MAX_TRACKED:]
        if problem:
            raise OutputError(f"{self._what}: {problem}")
        # No cancel before the new goal: Nav2 pre-empts the running goal itself (bt_navigator and the
        # controller server abort it and go on with the new one); a cancel would stop the robot
        # between two plans.
        future = self._client.send_goal_async(goal)
        sent = _Goal(future)
        with self._lock:
            self._goals.append(sent)
        future.add_done_callback(functools.partial(self._on_answer, sent))

    def _on_answer(self, sent: _Goal, future: Any) -> None:
        handle = None if future.cancelled() or future.exception() is not None else future.result()
        with self._lock:
            sent.answered = True
            if handle is None or not handle.accepted:
                self._problem = "the action server rejected the goal (is Nav2 active? see its log)"
                return
            sent.handle = handle
            cancel = sent.cancel_requested
        if cancel:  # a hold came while the goal was on its way
            handle.cancel_goal_async()

    def cancel(self) -> None:
        """Cancel every goal that may still run; one still unanswered is cancelled once accepted."""
        with self._lock:
            goals, self._goals = self._goals, []
            running = []
            for g in goals:
                g.cancel_requested = True
                if g.handle is not None and g.handle.status not in _TERMINAL:
                    running.append(g.handle)
        for handle in running:
            handle.cancel_goal_async()

    def destroy(self) -> None:
        self._client.destroy()
