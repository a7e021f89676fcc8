"""Exception types shared by qvla_core.

Every error that reaches a user names what was wrong and where (file, key,
value); the ROS layer turns them into log lines and diagnostics.
"""

from __future__ import annotations


class QvlaError(Exception):
    """Base class for all qvla errors."""


class ConfigError(QvlaError):
    """A robot YAML or policy config is invalid."""


class CheckpointError(QvlaError):
    """A checkpoint directory is missing, broken or does not match the embodiment."""


class NormalizationError(QvlaError):
    """Normalisation statistics are missing or malformed (never silently skipped)."""


class ObservationError(QvlaError):
    """An observation (image, joint state, stamp, instruction) is unusable."""


class SafetyError(QvlaError):
    """A command was rejected by the safety layer."""


class TrainingError(QvlaError):
    """A training run cannot go on: bad dataset, config or checkpoint, out of memory, full disk."""


class DeviceError(QvlaError):
    """The requested device or dtype cannot run here (no CUDA, unsupported dtype, out of memory)."""


class OutputError(QvlaError):
    """A command could not be handed to the robot's interface (no Nav2 action server, a goal the
    server rejected, a message type the installed interfaces cannot carry). The policy worked: this
    is a fault of the output side, reported as such, and the next command is tried again."""
