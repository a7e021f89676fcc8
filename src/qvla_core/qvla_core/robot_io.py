"""The ``ros`` half of a robot YAML: which topics feed and receive the policy.

Only names and numbers live here, so qvla_core stays free of rclpy; the
qvla_ros nodes turn this into subscriptions and publishers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from qvla_core.embodiment import ChannelKind, Embodiment, Name, Strict, parse_model, read_yaml
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


NAV2_ACTIONS = ("navigate_through_poses", "navigate_to_pose", "follow_path")


class PoseOutput(Strict):
    """Waypoints for Nav2, stamped in ``frame_id`` at the observation instant. Topics: ``goal_pose``
    (geometry_msgs/PoseStamped, the last waypoint; bt_navigator's /goal_pose) and ``path``
    (nav_msgs/Path, all waypoints). Nav2 actions (nav2_msgs): ``navigate_through_poses`` (all
    waypoints), ``navigate_to_pose`` (the last one) and ``follow_path`` (all of them as a path
    straight to the controller server). Each new plan pre-empts the previous goal; a hold cancels it
    (for the topics: a goal at the robot's current pose, an empty path)."""

    type: Literal["goal_pose", "path", "navigate_through_poses", "navigate_to_pose", "follow_path"] = Field(
        description="goal_pose: geometry_msgs/PoseStamped; path: nav_msgs/Path; or a Nav2 action "
        "(NavigateThroughPoses, NavigateToPose, FollowPath)."
    )
    topic: Topic = Field(description="Topic, or the action name for a Nav2 action (e.g. /follow_path).")
    frame_id: FrameId = Field(default="base_link", description="Frame of the waypoints (REP-105).")
    behavior_tree: str = Field(
        default="",
        max_length=4096,
        description="navigate_through_poses / navigate_to_pose: the behavior tree; empty: Nav2's default.",
    )
    controller_id: str = Field(
        default="", max_length=256, description="follow_path: the controller plugin; empty: the default."
    )
    goal_checker_id: str = Field(
        default="", max_length=256, description="follow_path: the goal checker plugin; empty: the default."
    )
    progress_checker_id: str = Field(
        default="",
        max_length=256,
        description="follow_path: the progress checker plugin; empty: the default (Nav2 Kilted and later).",
    )

    @property
    def is_action(self) -> bool:
        """A Nav2 action (nav2_msgs) rather than a topic."""
        return self.type in NAV2_ACTIONS

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> PoseOutput:
        """behavior_tree only for the navigator actions, the plugin ids only for follow_path."""
        wrong = []
        if self.behavior_tree and self.type not in ("navigate_through_poses", "navigate_to_pose"):
            wrong.append("behavior_tree")
        if self.type != "follow_path":
            ids = ("controller_id", "goal_checker_id", "progress_checker_id")
            wrong += [name for name in ids if getattr(self, name)]
        if wrong:
            names = ", ".join(wrong)
            raise ValueError(f"output {self.topic} ({self.type}): {names} do not apply to this type")
        return self


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
    max_inference_s: float | None = Field(
        default=None,
        gt=0,
        le=60.0,
        description=(
            "An inference still running after this long [s] counts as hung: the robot is held until a "
            "chunk arrives again (the plan it is executing was made from ever older sensors). Default: "
            "3/4 of a chunk (0.75 * horizon / control_rate_hz)."
        ),
    )


class LeaderJointStateInput(Strict):
    """One sensor_msgs/JointState topic of a teleoperation leader arm.

    ``joint_names[i]`` in the message fills action channel ``channels[i]``."""

    topic: Topic = Field(
        description="sensor_msgs/JointState topic of the leader, e.g. /leader_left/joint_states."
    )
    joint_names: list[str] = Field(min_length=1, description="Names as they appear in the message.")
    channels: list[Name] = Field(min_length=1, description="Action channels they fill, same order.")

    @model_validator(mode="after")
    def _same_length(self) -> LeaderJointStateInput:
        """``joint_names`` and ``channels`` are equally long."""
        if len(self.joint_names) != len(self.channels):
            raise ValueError(
                f"joint_names has {len(self.joint_names)} entries but channels has {len(self.channels)}"
            )
        return self


class LeaderActions(Strict):
    """The action at each control tick is the leader's newest JointState not newer than the tick
    (teleoperation: the follower is commanded to where the leader is). Ticks where a leader topic is
    older than ``ros.safety.max_state_age_s`` are a gap, an error when converting."""

    source: Literal["leader_joint_states"] = Field(description="Selects this action source.")
    joint_states: list[LeaderJointStateInput] = Field(
        min_length=1, description="Leader topics that together fill every action channel once."
    )
    gripper_raw_range: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description="Per gripper action channel: the leader's position at normalised 0 (closed) and 1 "
        "(open); default: ros.gripper_raw_range (a leader with the follower's gripper units).",
    )


class CommandedActions(Strict):
    """The action at each control tick is the command due then: the point of the JointTrajectory
    messages sent to ``ros.outputs``' joint_trajectory controllers, sampled as the controller
    executes them (linear interpolation, a newer trajectory taking over from its start). Before the
    first trajectory of an episode the controllers hold the measured start position."""

    source: Literal["commanded_trajectory"] = Field(description="Selects this action source.")


class OdometryActions(Strict):
    """A mobile base's waypoints from where it went: nav_msgs/Odometry on ``topic``. The action of the
    frame at tick ``k`` is the base's pose at the next frame's instant expressed in base_link at this
    frame's instant (x forward, y left, yaw counter-clockwise; REP-103), the instant being the
    observation stamp (the newest image); the pose between two odometry messages is interpolated,
    and the one before must be at most ``ros.safety.max_state_age_s`` old. After the episode's stop
    the base stays where it was then. The dataset reader composes these one-step rows into each
    frame's ``horizon`` waypoints (see docs/recording.md). Only for an embodiment whose action
    channels are waypoint_x, waypoint_y and (optionally) waypoint_yaw."""

    source: Literal["odometry"] = Field(description="Selects this action source.")
    topic: Topic = Field(default="/odom", description="nav_msgs/Odometry topic (odom -> base_link).")


ActionSource = Annotated[LeaderActions | CommandedActions | OdometryActions, Field(discriminator="source")]
WAYPOINT_KINDS = (ChannelKind.waypoint_x, ChannelKind.waypoint_y, ChannelKind.waypoint_yaw)


class RecordingSettings(Strict):
    """Demonstration recording (``recorder_node``) and its conversion to a dataset (``qvla-convert``):
    the cameras and ros.joint_states are recorded as the policy node reads them, plus the topics of
    the action source."""

    actions: ActionSource = Field(description="Where the action at each control tick comes from.")


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
    recording: RecordingSettings | None = Field(
        default=None, description="Demonstration recording; None: this robot cannot be recorded yet."
    )


class RobotConfig(Strict):
    """A whole robot YAML."""

    schema_version: Literal[1] = Field(default=1, description="Version of this file format.")
    embodiment: Embodiment = Field(description="What the policy knows about the body.")
    ros: RosIO = Field(description="How the body is wired to ROS.")

    @model_validator(mode="after")
    def _wired(self) -> RobotConfig:
        """ros.cameras names each embodiment camera once; ros.joint_states fill each state channel
        once; trajectory outputs and gripper_raw_range name existing channels; the recording's action
        source (leader topics of their own, or the trajectory outputs) fills each action channel once,
        or (odometry) the actions are waypoints."""
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
        if io.recording is not None:
            _check_action_source(io, emb)
        return self

    @property
    def has_trajectory_output(self) -> bool:
        return any(isinstance(o, TrajectoryOutput) for o in self.ros.outputs)


def _check_action_source(io: RosIO, emb: Embodiment) -> None:
    """ros.recording.actions fills every action channel exactly once, from topics of its own (odometry:
    the actions are waypoints)."""
    assert io.recording is not None
    source = io.recording.actions
    if isinstance(source, LeaderActions):
        fed = [ch for src in source.joint_states for ch in src.channels]
        where = "ros.recording.actions.joint_states"
        inputs = {src.topic for src in io.joint_states} | {c.topic for c in io.cameras}
        shared = sorted(inputs & {src.topic for src in source.joint_states})
        if shared:
            raise ValueError(f"{where}: {shared} are also observation inputs; a leader has topics of its own")
        for ch in source.gripper_raw_range or {}:
            if ch not in emb.action_names:
                raise ValueError(f"ros.recording.actions.gripper_raw_range: {ch} is not an action channel")
    elif isinstance(source, OdometryActions):
        _check_odometry_source(io, emb, source)
        return
    else:
        fed = [ch for out in io.outputs if isinstance(out, TrajectoryOutput) for ch in out.channels]
        where = "ros.outputs (joint_trajectory, the commanded_trajectory action source)"
    if sorted(fed) != sorted(emb.action_names):
        raise ValueError(
            f"{where}: channels {fed} must fill each action channel once {list(emb.action_names)}"
        )


def _check_odometry_source(io: RosIO, emb: Embodiment, source: OdometryActions) -> None:
    """Odometry labels only waypoints: x and y once each, yaw at most once, nothing else; its topic
    is not an observation input."""
    kinds = [c.kind for c in emb.action]
    ok = all(k in WAYPOINT_KINDS for k in kinds) and all(kinds.count(k) == 1 for k in WAYPOINT_KINDS[:2])
    if not ok or kinds.count(ChannelKind.waypoint_yaw) > 1:
        raise ValueError(
            "ros.recording.actions (source odometry) labels waypoints: the embodiment's action kinds "
            "must be waypoint_x, waypoint_y and optionally waypoint_yaw, each once; got "
            f"{[str(k) for k in kinds]}"
        )
    inputs = {src.topic for src in io.joint_states} | {c.topic for c in io.cameras}
    if source.topic in inputs:
        raise ValueError(f"ros.recording.actions.topic: {source.topic} is also an observation input")


IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
TRAJECTORY_TYPE = "trajectory_msgs/msg/JointTrajectory"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"


def recorded_topics(config: RobotConfig) -> dict[str, str]:
    """Topic -> ROS message type of everything a demonstration recording of this robot holds: the
    cameras and joint states the policy node reads, and the topics of the action source. Raises
    ConfigError when the YAML has no ``ros.recording``."""
    io = config.ros
    if io.recording is None:
        raise ConfigError(
            f"robot {config.embodiment.name}: the YAML has no ros.recording section, so nothing says "
            "where the actions come from (see docs/robot_config_schema.md, RecordingSettings)"
        )
    topics = {c.topic: COMPRESSED_IMAGE_TYPE if c.compressed else IMAGE_TYPE for c in io.cameras}
    topics.update({j.topic: JOINT_STATE_TYPE for j in io.joint_states})
    source = io.recording.actions
    if isinstance(source, LeaderActions):
        topics.update({j.topic: JOINT_STATE_TYPE for j in source.joint_states})
    elif isinstance(source, OdometryActions):
        topics[source.topic] = ODOMETRY_TYPE
    else:
        topics.update({o.topic: TRAJECTORY_TYPE for o in io.outputs if isinstance(o, TrajectoryOutput)})
    return topics


def load_robot_config(path: str | Path) -> RobotConfig:
    """Load and validate a robot YAML; errors name the file, the key and the bad value."""
    data = read_yaml(path)
    config: RobotConfig = parse_model(RobotConfig, data, str(path))
    return config


__all__ = ["ConfigError", "Embodiment", "RobotConfig", "RosIO", "load_robot_config"]
