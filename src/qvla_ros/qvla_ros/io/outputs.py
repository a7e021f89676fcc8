"""Publishers for what the robot receives, built from the robot YAML's ``ros.outputs``."""

from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.duration import Duration
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from qvla_core.errors import OutputError
from qvla_core.policy import ActionChunk
from qvla_core.robot_io import PoseOutput, RobotConfig
from qvla_core.runtime.output_mapping import controller_mappings, waypoint_columns, waypoints
from qvla_msgs.msg import ActionChunk as ActionChunkMsg
from qvla_ros.io import conversions as conv
from qvla_ros.io.nav2 import ActionOutput


class RobotOutputs:
    def __init__(self, node: Node, config: RobotConfig) -> None:
        self._node = node
        self._embodiment = config.embodiment
        self._controllers = [
            (m, node.create_publisher(JointTrajectory, m.topic, 10)) for m in controller_mappings(config)
        ]
        self._waypoint_outputs: list[_TopicOutput | ActionOutput] = []
        try:
            for spec in config.ros.outputs:
                if isinstance(spec, PoseOutput):
                    out = ActionOutput(node, spec) if spec.is_action else _TopicOutput(node, spec)
                    self._waypoint_outputs.append(out)
        except OutputError:
            self.destroy()  # configure fails: leave no half-built clients behind
            raise
        self._waypoint_cols = waypoint_columns(config.embodiment)
        self._frame = next((o.spec.frame_id for o in self._waypoint_outputs), "base_link")
        self._chunk_pub = node.create_publisher(ActionChunkMsg, "qvla/action_chunk", 10)
        self._marker_pub = node.create_publisher(MarkerArray, "qvla/predicted_path", 10)

    def send_trajectory(self, start: float, positions: np.ndarray, dt: float) -> None:
        for mapping, pub in self._controllers:
            # Serialized by us (the same bytes as the message, ~10x faster; see conversions).
            pub.publish(
                conv.joint_trajectory_cdr(mapping.joint_names, start, mapping.to_hardware(positions), dt)
            )

    def wait_delivered(self, timeout_s: float) -> None:
        """Until every controller has acknowledged what was sent (reliable QoS), or the timeout."""
        deadline = Duration(seconds=timeout_s)
        for _, pub in self._controllers:
            pub.wait_for_all_acked(deadline)
        for out in self._waypoint_outputs:
            if isinstance(out, _TopicOutput):  # the stop goal of a hold at exit
                out.publisher.wait_for_all_acked(deadline)

    def send_hold(self, positions: np.ndarray) -> None:
        # header.stamp 0 = "start now" for joint_trajectory_controller; reach the hold point in 0.1 s.
        for mapping, pub in self._controllers:
            traj = conv.joint_trajectory(
                mapping.joint_names, 0.0, mapping.to_hardware(positions[None, :]), 0.0
            )
            traj.points[0].time_from_start = conv.to_duration(0.1)
            pub.publish(traj)

    def send_waypoints(self, rows: np.ndarray, stamp: float) -> None:
        """Every waypoint output gets the plan; OutputError names each one that could not take it
        (after the others got theirs: one missing action server does not silence the rest)."""
        failed = []
        for out in self._waypoint_outputs:
            try:
                out.send(rows, stamp)
            except OutputError as exc:
                failed.append(str(exc))
        if failed:
            raise OutputError("; ".join(failed))

    def cancel_navigation(self) -> None:
        """A hold: Nav2 goals are cancelled; topics get a stop (see _TopicOutput.hold)."""
        for out in self._waypoint_outputs:
            if isinstance(out, ActionOutput):
                out.cancel()
            else:
                out.hold()

    def publish_chunk(self, chunk: ActionChunk, first_due: float, instruction: str) -> None:
        frame = self._frame if self._waypoint_cols is not None else ""
        self._chunk_pub.publish(
            conv.action_chunk_msg(chunk, self._embodiment.name, instruction, first_due, frame)
        )
        if self._marker_pub.get_subscription_count() == 0:
            return  # building hundreds of Point messages for nobody costs milliseconds per chunk
        if self._waypoint_cols is not None:
            path = waypoints(chunk.actions, self._waypoint_cols)
            self._marker_pub.publish(conv.path_markers(path, chunk.observation_stamp, frame))
        else:
            self._marker_pub.publish(conv.chunk_plot_markers(chunk, first_due))

    def destroy(self) -> None:
        for _, pub in self._controllers:
            self._node.destroy_publisher(pub)
        for out in self._waypoint_outputs:
            out.destroy()
        for name in ("_chunk_pub", "_marker_pub"):  # absent when __init__ failed before them
            if hasattr(self, name):
                self._node.destroy_publisher(getattr(self, name))


class _TopicOutput:
    """goal_pose (geometry_msgs/PoseStamped, the last waypoint) or path (nav_msgs/Path) on a topic.

    A topic cannot cancel anything, so a hold sends a stop: for goal_pose a goal at the robot's
    current pose (base_link's origin, stamp 0 = the latest transform), which bt_navigator takes as
    a new goal, already reached; for path an empty path, nothing left to follow."""

    def __init__(self, node: Node, spec: PoseOutput) -> None:
        self._node, self.spec = node, spec
        self.publisher = node.create_publisher(
            PoseStamped if spec.type == "goal_pose" else Path, spec.topic, 10
        )

    def send(self, rows: np.ndarray, stamp: float) -> None:
        if self.spec.type == "goal_pose":
            self.publisher.publish(conv.waypoint_poses(rows[-1:], stamp, self.spec.frame_id)[0])
        else:
            self.publisher.publish(conv.waypoint_path(rows, stamp, self.spec.frame_id))

    def hold(self) -> None:
        here = np.zeros((1 if self.spec.type == "goal_pose" else 0, 3))
        self.send(here, 0.0)

    def destroy(self) -> None:
        self._node.destroy_publisher(self.publisher)
