"""Every parameter of the policy node, declared once: name, type, default, description, range.

The node declares them from this table, validates updates against it, and the
launch logic (qvla_ros.tools.bringup) builds its parameter dicts from the same names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    read_only: bool = False
    # Besides ``choices``, values matching this regex are accepted (``what`` says what they are).
    pattern: str = ""
    pattern_what: str = ""

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(
            name=self.name,
            type=_TYPES[type(self.default)],
            description=self.description,
            read_only=self.read_only,
        )
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
            if self.pattern:
                d.additional_constraints += f"; or {self.pattern_what}"
        if self.low is not None and self.high is not None:
            if isinstance(self.default, int) and not isinstance(self.default, bool):
                d.integer_range = [IntegerRange(from_value=int(self.low), to_value=int(self.high), step=0)]
            else:
                d.floating_point_range = [
                    FloatingPointRange(from_value=self.low, to_value=self.high, step=0.0)
                ]
        return d

    def check(self, value: Any) -> str | None:
        """Reason the value is invalid, or None."""
        if type(value) is not type(self.default):
            return f"{self.name} must be {type(self.default).__name__}, got {type(value).__name__}"
        if self.choices and value not in self.choices:
            if self.pattern and re.fullmatch(self.pattern, value):
                return None
            alt = f" or {self.pattern_what}" if self.pattern else ""
            return f"{self.name} must be one of {list(self.choices)}{alt}, got {value!r}"
        if self.low is not None and self.high is not None and not (self.low <= value <= self.high):
            return f"{self.name} must lie in [{self.low}, {self.high}], got {value}"
        return None


POLICY_NODE_PARAMS: tuple[Param, ...] = (
    Param("robot_config", "", "Path of the robot YAML (embodiment + topics). Required.", read_only=True),
    Param(
        "policy",
        "qwen_vla",
        "Which policy drives the robot: the Qwen-VLA model or the scripted TransferCube expert (sim demo), "
        "the privileged navigation expert expert_vln_nav (with nav_sim_node), "
        "or a policy of your own as module.path:factory (a callable taking the RobotConfig and returning "
        "an object with infer(observation) and reset(), importable by the node).",
        choices=("qwen_vla", "expert_transfer_cube", "expert_vln_nav"),
        pattern=r"[A-Za-z_][\w.]*:[A-Za-z_]\w*",
        pattern_what="a plugin module.path:factory",
        read_only=True,
    ),
    Param(
        "checkpoint", "", "Qwen-VLA checkpoint directory (local path; nothing is downloaded).", read_only=True
    ),
    Param("device", "cpu", "Torch device for the model: cpu, cuda or cuda:N.", read_only=True),
    Param("dtype", "float32", "Model dtype.", choices=("float32", "bfloat16"), read_only=True),
    Param(
        "num_steps",
        0,
        "Euler denoising steps; 0 = the checkpoint's default.",
        low=0,
        high=100,
        read_only=True,
    ),
    Param(
        "seed",
        -1,
        "Sampling seed for reproducible chunks; -1 = nondeterministic.",
        low=-1,
        high=2**31 - 1,
        read_only=True,
    ),
    Param(
        "initial_instruction",
        "",
        "Instruction used from activation until set_instruction is called (later: /qvla/set_instruction).",
        read_only=True,
    ),
    Param(
        "autostart",
        False,
        "Configure and activate on start-up instead of waiting for lifecycle calls.",
        read_only=True,
    ),
    Param(
        "dry_run",
        False,
        "Compute and publish /qvla/action_chunk but never command the robot (fixed at start-up).",
        read_only=True,
    ),
    Param(
        "max_instruction_length",
        1000,
        "Longest accepted instruction [characters].",
        low=1,
        high=100000,
        read_only=True,
    ),
    Param(
        "status_rate_hz",
        5.0,
        "Rate of /qvla/status and /diagnostics [Hz]; may be changed while running.",
        low=0.2,
        high=100.0,
    ),
    Param(
        "image_qos",
        "sensor_data",
        "QoS of image subscriptions: sensor_data (best effort, what camera drivers use) or reliable.",
        choices=("sensor_data", "reliable"),
        read_only=True,
    ),
    Param(
        "torch_threads",
        0,
        "CPU threads for the model; 0 = all cores but one, so callbacks and the watchdog keep a core.",
        low=0,
        high=1024,
        read_only=True,
    ),
    Param(
        "command_lead_s",
        0.0,
        "Extra delay before a chunk's first point is due [s].",
        low=0.0,
        high=1.0,
        read_only=True,
    ),
)


def declare_all(node: Node, table: tuple[Param, ...]) -> tuple[dict[str, Any], list[str]]:
    """Declare every parameter of ``table`` on ``node``; returns their values and the faults found.

    A wrong-typed value from launch keeps the default and is a fault (the node stays up to report
    it); so is a value out of its range or choices, which declaring alone does not check (the
    on_set_parameters callback sees later updates only)."""
    faults: list[str] = []
    for spec in table:
        try:
            node.declare_parameter(spec.name, spec.default, spec.descriptor())
        except (InvalidParameterTypeException, ParameterException) as exc:
            faults.append(f"parameter {spec.name}: {exc}")
            node.declare_parameter(spec.name, spec.default, spec.descriptor(), ignore_override=True)
    values = {spec.name: node.get_parameter(spec.name).value for spec in table}
    for spec in table:
        reason = spec.check(values[spec.name])
        if reason is not None:
            faults.append(f"parameter {reason}")
    return values, faults


def check_update(params: list[Parameter], table: tuple[Param, ...]) -> SetParametersResult:
    """on_set_parameters callback body for a node whose parameters are ``table``: reject a bad
    update with the reason."""
    by_name = {spec.name: spec for spec in table}
    for p in params:
        spec = by_name.get(p.name)
        if spec is None:
            continue  # use_sim_time and other built-ins
        reason = spec.check(p.value)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
    return SetParametersResult(successful=True)


def validate_update(params: list[Parameter]) -> SetParametersResult:
    """The policy node's on_set_parameters callback."""
    return check_update(params, POLICY_NODE_PARAMS)
