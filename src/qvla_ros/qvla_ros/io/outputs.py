"""Publishers for what the robot receives, built from the robot YAML's ``ros.outputs``."""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path
from rclpy.duration import Duration
from rclpy.node import Node
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from qvla_core.policy import ActionChunk
from qvla_core.robot_io import PoseOutput, RobotConfig
from qvla_core.runtime.output_mapping import controller_mappings, waypoint_columns, waypoints
from qvla_msgs.msg import ActionChunk as ActionChunkMsg
from qvla_ros.io import conversions as conv


class RobotOutputs:
    def __init__(self, node: Node, config: RobotConfig) -> None:
        self._node = node
        self._embodiment = config.embodiment
        self._controllers = [
            (m, node.create_publisher(JointTrajectory, m.topic, 10)) for m in controller_mappings(config)
        ]
        self._pose_outputs: list[tuple[PoseOutput, Any]] = []
        self._nav_client: Any = None
        for spec in config.ros.outputs:
            if not isinstance(spec, PoseOutput):
                continue
            if spec.type == "goal_pose":
                self._pose_outputs.append((spec, node.create_publisher(PoseStamped, spec.topic, 10)))
            elif spec.type == "path":
                self._pose_outputs.append((spec, node.create_publisher(Path, spec.topic, 10)))
            else:
                self._pose_outputs.append((spec, self._make_nav_client(spec.topic)))
        self._waypoint_cols = waypoint_columns(config.embodiment)
        self._frame = next((s.frame_id for s, _ in self._pose_outputs), "base_link")
        self._chunk_pub = node.create_publisher(ActionChunkMsg, "qvla/action_chunk", 10)
        self._marker_pub = node.create_publisher(MarkerArray, "qvla/predicted_path", 10)

    def _make_nav_client(self, name: str) -> Any:
        try:
            from nav2_msgs.action import NavigateThroughPoses
            from rclpy.action import ActionClient
        except ImportError as exc:
            raise RuntimeError(
                "output navigate_through_poses needs nav2_msgs (install ros-$ROS_DISTRO-nav2-msgs), "
                "or use output type goal_pose or path"
            ) from exc
        return _NavClient(ActionClient(self._node, NavigateThroughPoses, name), NavigateThroughPoses)

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

    def send_hold(self, positions: np.ndarray) -> None:
        # header.stamp 0 = "start now" for joint_trajectory_controller; reach the hold point in 0.1 s.
        for mapping, pub in self._controllers:
            traj = conv.joint_trajectory(
                mapping.joint_names, 0.0, mapping.to_hardware(positions[None, :]), 0.0
            )
            traj.points[0].time_from_start = conv.to_duration(0.1)
            pub.publish(traj)

    def send_waypoints(self, rows: np.ndarray, stamp: float) -> None:
        for spec, pub in self._pose_outputs:
            if spec.type == "goal_pose":
                pub.publish(conv.waypoint_poses(rows[-1:], stamp, spec.frame_id)[0])
            elif spec.type == "path":
                pub.publish(conv.waypoint_path(rows, stamp, spec.frame_id))
            else:
                pub.send(conv.waypoint_poses(rows, stamp, spec.frame_id))

    def cancel_navigation(self) -> None:
        for spec, pub in self._pose_outputs:
            if spec.type == "navigate_through_poses":
                pub.cancel()

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
        for spec, pub in self._pose_outputs:
            if spec.type == "navigate_through_poses":
                pub.destroy()
            else:
                self._node.destroy_publisher(pub)
        self._node.destroy_publisher(self._chunk_pub)
        self._node.destroy_publisher(self._marker_pub)


class _NavClient:
    """Nav2 NavigateThroughPoses: each new chunk pre-empts the previous goal; cancel on hold."""

    def __init__(self, client: Any, action_type: Any) -> None:
        self._client, self._type, self._handle_future = client, action_type, None

    def send(self, poses: list[PoseStamped]) -> None:
        if not self._client.server_is_ready():
            return
        goal = self._type.Goal()
        field = goal.poses
        if hasattr(field, "poses"):  # Jazzy+: nav_msgs-style PoseStampedArray
            field.header = poses[0].header
            field.poses = poses
        else:  # Humble: PoseStamped[]
            goal.poses = poses
        self._handle_future = self._client.send_goal_async(goal)

    def cancel(self) -> None:
        future, self._handle_future = self._handle_future, None
        if future is not None and future.done() and future.result() is not None:
            future.result().cancel_goal_async()

    def destroy(self) -> None:
        self._client.destroy()
