"""Build the policy the node's parameters ask for (heavy imports happen only here)."""

from __future__ import annotations

from typing import Any

from qvla_core.errors import CheckpointError
from qvla_core.policy import Policy
from qvla_core.robot_io import RobotConfig


def make_policy(params: dict[str, Any], config: RobotConfig) -> Policy:
    kind = params["policy"]
    if kind == "expert_transfer_cube":
        from qvla_core.sim.expert import TransferCubeExpert

        return TransferCubeExpert(config.embodiment)
    if not params["checkpoint"]:
        raise CheckpointError(
            "parameter checkpoint is empty: give a local Qwen-VLA checkpoint directory "
            "(qvla-build-checkpoint makes a random one for tests)"
        )
    from qvla_core.model.policy import QwenVLAPolicy

    return QwenVLAPolicy.from_checkpoint(
        params["checkpoint"],
        config.embodiment,
        device=params["device"],
        dtype=params["dtype"],
        num_steps=params["num_steps"] or None,
        seed=None if params["seed"] < 0 else params["seed"],
    )
