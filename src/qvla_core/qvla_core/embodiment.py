"""The robot YAML: one file per robot, validated on load.

A robot file has two parts:

* ``embodiment`` -- what the policy needs to know about the body: the text
  that conditions the prompt (body, control convention), the control rate and
  horizon, the state and action channels with their limits, the cameras and
  their frame history, and optional normalisation statistics.
* ``ros`` -- how the body is wired to ROS topics (see :mod:`qvla_core.robot_io`).
  It only holds names and numbers, so this module stays transport-free.

The schema is declared once here (pydantic); ``qvla-schema`` prints it as JSON
Schema and the README's reference is generated from it.
"""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qvla_core.errors import ConfigError

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    """Base model: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelKind(StrEnum):
    """What one action or state channel means on the robot."""

    joint_position = "joint_position"  # absolute joint angle [rad] or prismatic position [m]
    joint_delta = "joint_delta"  # change of a joint position per control step [rad]
    gripper = "gripper"  # normalised opening, 0 = closed, 1 = open
    ee_position = "ee_position"  # end-effector x/y/z in the base frame [m]
    ee_rotation = "ee_rotation"  # end-effector roll/pitch/yaw in the base frame [rad]
    ee_delta = "ee_delta"  # end-effector displacement per step [m or rad]
    waypoint_x = "waypoint_x"  # forward, in the robot frame at the observation stamp [m]
    waypoint_y = "waypoint_y"  # left, same frame [m]
    waypoint_yaw = "waypoint_yaw"  # heading, same frame, counter-clockwise [rad]


class Channel(Strict):
    """One scalar channel of the state or action vector."""

    name: Name = Field(description="Channel name; unique within state, and within action.")
    kind: ChannelKind = Field(description="What the value means on the robot, and its units.")
    lower: float = Field(description="Lowest safe value, in the channel's units.")
    upper: float = Field(description="Highest safe value, in the channel's units.")
    max_velocity: float | None = Field(
        default=None, gt=0, description="Largest safe rate of change [units/s]; None = unlimited."
    )

    def command_range(self) -> tuple[float, float]:
        """The range a command to this channel is clamped into: its limits, and for a gripper
        also the normalised 0..1 opening."""
        if self.kind == ChannelKind.gripper:
            return max(self.lower, 0.0), min(self.upper, 1.0)
        return self.lower, self.upper

    @model_validator(mode="after")
    def _limits_ordered(self) -> Channel:
        """``lower`` and ``upper`` are finite and ``lower < upper``."""
        if not (math.isfinite(self.lower) and math.isfinite(self.upper)):
            raise ValueError(f"limits must be finite, got lower={self.lower}, upper={self.upper}")
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class FrameHistory(Strict):
    """How many past frames of a camera the policy sees, and how far apart."""

    frames: int = Field(default=1, ge=1, le=32, description="Frames per camera, newest included.")
    stride_s: float = Field(default=0.0, ge=0.0, le=10.0, description="Time between kept frames [s].")

    @model_validator(mode="after")
    def _stride_needed(self) -> FrameHistory:
        """``stride_s > 0`` when ``frames > 1``."""
        if self.frames > 1 and self.stride_s <= 0.0:
            raise ValueError("stride_s must be > 0 when frames > 1")
        return self


class Camera(Strict):
    """A camera the policy looks through."""

    name: Name = Field(description="Camera name; unique, and wired to a topic in ros.cameras.")
    width: int = Field(gt=0, le=8192, description="Expected image width [px].")
    height: int = Field(gt=0, le=8192, description="Expected image height [px].")
    history: FrameHistory = Field(
        default=FrameHistory(), description="Past frames the policy sees; default: the newest only."
    )


class NormStats(Strict):
    """Per-channel normalisation. ``mean_std``: (x-mean)/std; ``quantile``: q01..q99 -> -1..1."""

    mode: Literal["mean_std", "quantile"] = Field(description="Which statistics are used.")
    mean: list[float] | None = Field(default=None, description="mean_std: per-channel mean.")
    std: list[float] | None = Field(default=None, description="mean_std: per-channel standard deviation.")
    q01: list[float] | None = Field(default=None, description="quantile: per-channel 1st percentile.")
    q99: list[float] | None = Field(default=None, description="quantile: per-channel 99th percentile.")

    @model_validator(mode="after")
    def _complete(self) -> NormStats:
        """The mode's two lists are given, finite and equally long; std > 0; each q99 > its q01."""
        pair = ("mean", "std") if self.mode == "mean_std" else ("q01", "q99")
        for key in pair:
            values = getattr(self, key)
            if values is None:
                raise ValueError(f"mode {self.mode} needs '{key}'")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"'{key}' must be finite, got {values}")
        a, b = (getattr(self, k) for k in pair)
        if len(a) != len(b):
            raise ValueError(f"'{pair[0]}' has {len(a)} values but '{pair[1]}' has {len(b)}")
        if self.mode == "mean_std" and any(s <= 0 for s in b):
            raise ValueError(f"'std' must be > 0, got {b}")
        if self.mode == "quantile" and any(hi <= lo for lo, hi in zip(a, b, strict=True)):
            raise ValueError("each q99 must be above its q01")
        return self

    def width(self) -> int:
        values = self.mean if self.mode == "mean_std" else self.q01
        assert values is not None
        return len(values)


class Normalization(Strict):
    """Normalisation statistics for the state and the action vector."""

    state: NormStats = Field(description="One value per state channel, in state order.")
    action: NormStats = Field(description="One value per action channel, in action order.")


class Embodiment(Strict):
    """Everything the policy knows about one robot body."""

    name: Name = Field(description="Robot name; shipped robot files are named after it.")
    body: str = Field(min_length=1, max_length=2000, description="The robot body, in words.")
    control_convention: str = Field(
        min_length=1, max_length=2000, description="What the actions mean, in words."
    )
    control_rate_hz: float = Field(gt=0, le=1000, description="Rate the actions are executed at [Hz].")
    horizon: int = Field(ge=1, le=256, description="Actions per predicted chunk.")
    state: list[Channel] = Field(default_factory=list, description="Proprioceptive inputs; may be empty.")
    action: list[Channel] = Field(min_length=1, description="What the policy commands, in vector order.")
    cameras: list[Camera] = Field(min_length=1, description="Cameras the policy sees, in prompt order.")
    normalization: Normalization | None = Field(
        default=None, description="Stats used when the checkpoint has none for this embodiment."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Embodiment:
        """Names repeat nowhere within state, action or cameras; normalization widths match them."""
        for label, items in (("state", self.state), ("action", self.action), ("cameras", self.cameras)):
            names = [item.name for item in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{label} names repeat: {dupes}")
        if self.normalization is not None:
            for label, width in (("state", len(self.state)), ("action", len(self.action))):
                got = getattr(self.normalization, label).width()
                if got != width:
                    raise ValueError(f"normalization.{label} has {got} values for {width} channels")
        return self

    @property
    def dt(self) -> float:
        """Seconds between consecutive actions of a chunk."""
        return 1.0 / self.control_rate_hz

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.action)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.state)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def channel_kinds(self) -> tuple[ChannelKind, ...]:
        return tuple(c.kind for c in self.action)


def format_validation_error(source: str, error: ValidationError, data: Any, prefix: str = "") -> str:
    """One line per problem: ``file: key.path: message (got value)``."""
    lines = []
    for item in error.errors():
        loc = ".".join([prefix, *(str(p) for p in item["loc"])] if prefix else [str(p) for p in item["loc"]])
        loc = loc or "<root>"
        value = item.get("input", _lookup(data, item["loc"]))
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"{source}: {loc}: {item['msg']} (got {shown})")
    return "\n".join(lines)


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for key in loc:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read robot config: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: <root>: expected a mapping (got {type(data).__name__})")
    return data


def parse_model(model: type[Strict], data: Any, source: str, prefix: str = "") -> Any:
    """Validate ``data`` against ``model``; raise ConfigError naming source, key and value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc, data, prefix)) from None


def load_embodiment(path: str | Path) -> Embodiment:
    """Load only the ``embodiment`` part of a robot YAML."""
    data = read_yaml(path)
    if "embodiment" not in data:
        raise ConfigError(f"{path}: embodiment: missing key (got keys {sorted(data)})")
    result: Embodiment = parse_model(Embodiment, data["embodiment"], str(path), "embodiment")
    return result
