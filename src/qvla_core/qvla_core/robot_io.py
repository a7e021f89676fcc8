"""The ``ros`` half of a robot YAML: which topics feed and receive the policy.

Only names and numbers live here, so qvla_core stays free of rclpy; the
qvla_ros nodes turn this into subscriptions and publishers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from qvla_core.embodiment import Embodiment, Name, Strict, parse_model, read_yaml
from qvla_core.errors import ConfigError

Topic = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[~/A-Za-z][A-Za-z0-9_/~{}]*$")]
FrameId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_/]*$")]


class CameraInput(Strict):
    """One camera topic. A topic ending in ``/compressed`` carries sensor_msgs/CompressedImage."""

    camera: Name = Field(description="Camera name from embodiment.cameras.")
    topic: Topic = Field(description="sensor_msgs/Image topic, or CompressedImage if it ends in /compressed.")

    @property
    def compressed(self) -> bool:
        return self.topic.endswith("/compressed")


class JointStateInput(Strict):
    """One sensor_msgs/JointState topic.

    ``joint_names[i]`` in the message fills state channel ``channels[i]``."""

    topic: Topic = Field(description="sensor_msgs/JointState topic.")
    joint_names: list[str] = Field(min_length=1, description="Names as they appear in the message.")
    channels: list[Name] = Field(min_length=1, description="State channels they fill, same order.")

    @model_validator(mode="after")
    def _same_length(self) -> JointStateInput:
        """``joint_names`` and ``channels`` are equally long."""
        if len(self.joint_names) != len(self.channels):
            raise ValueError(
                f"joint_names has {len(self.joint_names)} entries but channels has {len(self.channels)}"
            )
        return self


class TrajectoryOutput(Strict):
    """trajectory_msgs/JointTrajectory to a joint_trajectory_controller."""

    type: Literal["joint_trajectory"] = Field(description="Selects this output kind.")
    topic: Topic = Field(description="e.g. /left_arm_controller/joint_trajectory")
    joint_names: list[str] = Field(min_length=1, description="The controller's joints, its order.")
    channels: list[Name] = Field(min_length=1, description="Action channel for each joint, same order.")

    @model_validator(mode="after")
    def _same_length(self) -> TrajectoryOutput:
        """``joint_names`` and ``channels`` are equally long."""
        if len(self.joint_names) != len(self.channels):
            raise ValueError(
                f"joint_names has {len(self.joint_names)} entries but channels has {len(self.channels)}"
            )
        return self


class PoseOutput(Strict):
    """Waypoints for Nav2: ``goal_pose`` (last waypoint), ``path`` (nav_msgs/Path) or
    ``navigate_through_poses`` (the Nav2 action, where nav2_msgs is installed)."""

    type: Literal["goal_pose", "path", "navigate_through_poses"] = Field(
        description="goal_pose: geometry_msgs/PoseStamped; path: nav_msgs/Path; or the Nav2 action."
    )
    topic: Topic = Field(description="Topic, or action name for navigate_through_poses.")
    frame_id: FrameId = Field(default="base_link", description="Frame of the waypoints (REP-105).")


Output = Annotated[TrajectoryOutput | PoseOutput, Field(discriminator="type")]


class SyncSettings(Strict):
    """Approximate-time assembly of one observation from all inputs."""

    slop_s: float = Field(
        default=0.05, gt=0, le=1.0, description="Largest stamp spread in one observation [s]."
    )
    max_age_s: float = Field(default=0.25, gt=0, le=10.0, description="Oldest usable input, against now [s].")
    queue_size: int = Field(default=10, ge=1, le=1000, description="Messages kept per input.")


class ChunkingSettings(Strict):
    """How consecutive action chunks are spliced."""

    mode: Literal["replace", "temporal_ensemble", "rtc"] = Field(
        default="rtc",
        description="replace: the newest chunk wins; temporal_ensemble: weighted mean of recent chunks; "
        "rtc: real-time chunking (the policy continues the committed plan).",
    )
    ensemble_decay: float = Field(
        default=0.1, ge=0.0, le=10.0, description="temporal_ensemble: weight exp(-decay * age_in_chunks)."
    )
    inference_period_s: float = Field(
        default=0.0, ge=0.0, le=10.0, description="Minimum time between inferences [s]; 0 = back to back."
    )


class SafetySettings(Strict):
    """Limits on what is commanded, on top of the per-channel limits of the embodiment."""

    max_state_age_s: float = Field(default=0.2, gt=0, le=10.0, description="Stale joint state after [s].")
    max_image_age_s: float = Field(default=0.3, gt=0, le=10.0, description="Stale camera image after [s].")
    continuity_tolerance: float = Field(
        default=0.3, gt=0, description="Largest jump of the first command from the measured state [rad/m]."
    )


class RosIO(Strict):
    """The ROS wiring of a robot: input topics, outputs, and runtime settings."""

    cameras: list[CameraInput] = Field(min_length=1, description="One topic per embodiment camera.")
    joint_states: list[JointStateInput] = Field(
        default_factory=list, description="Topics that together fill every state channel once."
    )
    outputs: list[Output] = Field(min_length=1, description="Where actions go; selected by ``type``.")
    gripper_raw_range: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Per gripper channel: hardware position at normalised 0 (closed) and 1 (open).",
    )
    sync: SyncSettings = Field(default=SyncSettings(), description="Observation assembly.")
    chunking: ChunkingSettings = Field(default=ChunkingSettings(), description="Chunk splicing.")
    safety: SafetySettings = Field(default=SafetySettings(), description="Command and input checks.")


class RobotConfig(Strict):
    """A whole robot YAML."""

    schema_version: Literal[1] = Field(default=1, description="Version of this file format.")
    embodiment: Embodiment = Field(description="What the policy knows about the body.")
    ros: RosIO = Field(description="How the body is wired to ROS.")

    @model_validator(mode="after")
    def _wired(self) -> RobotConfig:
        """ros.cameras names each embodiment camera once; ros.joint_states fill each state channel
        once; trajectory outputs and gripper_raw_range name existing channels."""
        emb, io = self.embodiment, self.ros
        cams = [c.camera for c in io.cameras]
        if sorted(cams) != sorted(emb.camera_names):
            raise ValueError(
                f"ros.cameras {cams} must name each embodiment camera once {list(emb.camera_names)}"
            )
        fed = [ch for src in io.joint_states for ch in src.channels]
        if sorted(fed) != sorted(emb.state_names):
            raise ValueError(
                f"ros.joint_states channels {fed} must fill each state channel once {list(emb.state_names)}"
            )
        for out in io.outputs:
            if isinstance(out, TrajectoryOutput):
                unknown = [ch for ch in out.channels if ch not in emb.action_names]
                if unknown:
                    raise ValueError(f"output {out.topic}: channels {unknown} are not action channels")
        for ch in io.gripper_raw_range:
            if ch not in emb.action_names and ch not in emb.state_names:
                raise ValueError(f"gripper_raw_range: {ch} is not a channel")
        return self

    @property
    def has_trajectory_output(self) -> bool:
        return any(isinstance(o, TrajectoryOutput) for o in self.ros.outputs)


def load_robot_config(path: str | Path) -> RobotConfig:
    """Load and validate a robot YAML; errors name the file, the key and the bad value."""
    data = read_yaml(path)
    config: RobotConfig = parse_model(RobotConfig, data, str(path))
    return config


__all__ = ["ConfigError", "Embodiment", "RobotConfig", "RosIO", "load_robot_config"]
