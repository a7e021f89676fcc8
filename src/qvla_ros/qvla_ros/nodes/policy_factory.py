"""Build the policy the node's parameters ask for (heavy imports happen only here)."""

from __future__ import annotations

import importlib
import os
from typing import Any

from qvla_core.errors import CheckpointError, ConfigError
from qvla_core.policy import Policy
from qvla_core.robot_io import RobotConfig


def make_policy(params: dict[str, Any], config: RobotConfig) -> Policy:
    _limit_cpu_threads(int(params["torch_threads"]))
    kind = params["policy"]
    if ":" in kind:
        return _plugin(kind, config)
    if kind == "expert_transfer_cube":
        from qvla_core.sim.expert import TransferCubeExpert

        return TransferCubeExpert(config.embodiment)
    if kind == "expert_vln_nav":
        from qvla_ros.nodes.nav_ground_truth import make_nav_expert

        return make_nav_expert(config)
    if not params["checkpoint"]:
        raise CheckpointError(
            "parameter checkpoint is empty: pass checkpoint:=<a local Qwen-VLA checkpoint directory> "
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


def _plugin(spec: str, config: RobotConfig) -> Policy:
    """``module.path:factory``: a policy of the user's own (or a test's), built from the robot config."""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            f"parameter policy: cannot load the plugin {spec!r} ({type(exc).__name__}: {exc}); the module "
            "must be importable by the node (installed, or on PYTHONPATH)"
        ) from exc
    try:
        policy = factory(config)
    except Exception as exc:
        raise ConfigError(f"parameter policy: the plugin {spec} failed: {type(exc).__name__}: {exc}") from exc
    missing = [name for name in ("infer", "reset") if not callable(getattr(policy, name, None))]
    if missing:
        raise ConfigError(f"parameter policy: {spec} returned {type(policy).__name__}, which lacks {missing}")
    return policy  # type: ignore[no-any-return]


def _limit_cpu_threads(requested: int) -> None:
    """Leave the executor a core: model ops on all cores starve sensor callbacks and the watchdog."""
    import torch

    threads = requested or max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
