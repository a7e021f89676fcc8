"""policy:=module.path:factory: a policy of the user's own, checked like every parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from qvla_core.errors import ConfigError
from qvla_core.robot_io import load_robot_config
from qvla_ros.io.parameters import POLICY_NODE_PARAMS
from qvla_ros.nodes.policy_factory import make_policy

ALOHA = Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml"
POLICY = next(p for p in POLICY_NODE_PARAMS if p.name == "policy")


def params(policy: str) -> dict[str, object]:
    return {spec.name: spec.default for spec in POLICY_NODE_PARAMS} | {"policy": policy, "torch_threads": 1}


@pytest.mark.parametrize("value", ["qwen_vla", "expert_transfer_cube", "my_pkg.policies:make", "a:b"])
def test_names_and_plugin_specs_are_accepted(value: str) -> None:
    assert POLICY.check(value) is None


@pytest.mark.parametrize("value", ["qwen", "my_pkg.policies", "my-pkg:make", "a:b:c", ":make", "pkg:"])
def test_anything_else_is_refused_naming_both_forms(value: str) -> None:
    reason = POLICY.check(value)
    assert reason is not None and "qwen_vla" in reason and "module.path:factory" in reason, reason


def test_a_plugin_is_built_from_the_robot_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QVLA_FAULT_DIR", str(tmp_path))
    policy = make_policy(params("tests.ros.fault_policy:make"), load_robot_config(ALOHA))
    assert policy.embodiment.name == "aloha"


def test_a_plugin_that_cannot_be_loaded_says_why() -> None:
    config = load_robot_config(ALOHA)
    with pytest.raises(
        ConfigError, match=r"parameter policy: cannot load the plugin 'no_such_pkg:make'.*importable"
    ):
        make_policy(params("no_such_pkg:make"), config)
    with pytest.raises(ConfigError, match=r"cannot load the plugin 'tests.ros.fault_policy:nothing'"):
        make_policy(params("tests.ros.fault_policy:nothing"), config)
    with pytest.raises(ConfigError, match=r"returned RobotConfig, which lacks \['infer', 'reset'\]"):
        make_policy(params("copy:copy"), config)
    with pytest.raises(ConfigError, match=r"the plugin pathlib:Path failed: TypeError"):
        make_policy(params("pathlib:Path"), config)
