"""Every parameter of the MuJoCo ALOHA sim node, declared once (same :class:`Param` table as the policy node).

Everything is fixed at start-up except ``real_time_factor``, which may be changed while running, and
``seed``, which then sets the seed of the next reset.
"""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from qvla_ros.io.parameters import Param, check_update

SIM_NODE_PARAMS: tuple[Param, ...] = (
    Param(
        "robot_config",
        "",
        "Path of the robot YAML (topics, joint names, cameras, gripper_raw_range); "
        "empty = the aloha.yaml installed with qvla_ros.",
        read_only=True,
    ),
    Param(
        "task",
        "transfer_cube",
        "Which gym-aloha scene to simulate.",
        choices=("transfer_cube", "insertion"),
        read_only=True,
    ),
    Param(
        "seed",
        0,
        "Seed of the first episode (object pose); each ~/reset uses the next one. Set while running, it is "
        "the seed of the next ~/reset (exact seed lists).",
        low=0,
        high=2**31 - 1,
    ),
    Param(
        "image_width",
        640,
        "Width of the rendered camera images [px] (the robot YAML's size is what the policy expects; "
        "this only sets what the sim renders).",
        low=8,
        high=4096,
        read_only=True,
    ),
    Param(
        "image_height", 480, "Height of the rendered camera images [px].", low=8, high=4096, read_only=True
    ),
    Param(
        "camera_rate_hz",
        25.0,
        "Camera frame rate in sim time [Hz]: images are rendered every round(50 / rate) control steps; "
        "0 = no cameras.",
        low=0.0,
        high=50.0,
        read_only=True,
    ),
    Param(
        "real_time_factor",
        1.0,
        "Sim seconds per wall-clock second (1.0 = real time, 0 = as fast as possible). "
        "Can be changed while running.",
        low=0.0,
        high=100.0,
    ),
    Param(
        "publish_clock",
        True,
        "Publish /clock (the sim owns time: run the other nodes with use_sim_time:=true).",
        read_only=True,
    ),
)


def validate_update(params: list[Parameter[Any]]) -> SetParametersResult:
    """The sim node's on_set_parameters callback body."""
    return check_update(params, SIM_NODE_PARAMS)
