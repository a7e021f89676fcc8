"""The launch files, loaded with launch's Python API: each declares exactly bringup's launch
arguments and starts the qvla_ros policy_node with the parameters ``policy_node_spec`` computes
(the specs the integration tests start). Needs launch_ros, so it only runs on a ROS 2 distribution
with this workspace built and sourced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.ros

pytest.importorskip(
    "launch_ros",
    reason="launch_ros is not installable from PyPI; the launch files run on a ROS 2 distribution",
)

import launch_ros.actions  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch.launch_description_sources import get_launch_description_from_python_launch_file  # noqa: E402

from launch import LaunchContext  # noqa: E402
from qvla_ros.bringup import LAUNCH_ARGUMENTS, SIM_ARGUMENTS, policy_node_spec, sim_demo_specs  # noqa: E402
from tests.ros.harness import REPO  # noqa: E402

LAUNCH_FILES = {"aloha.launch.py": "aloha", "vln_nav.launch.py": "vln_nav"}
RealNode = launch_ros.actions.Node


def _config_dir() -> Path:
    """Where the launch files look robots up by name (the installed share directory)."""
    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots"


def _expand(
    launch_file: str, values: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[str], list[Any], list[dict[str, Any]]]:
    """Declared argument names, the actions the launch file produces for ``values`` (launch
    arguments as `ros2 launch` passes them: strings), and the keyword arguments each
    launch_ros Node was built with."""
    built: list[dict[str, Any]] = []

    def recording_node(**kwargs: Any) -> Any:
        built.append(kwargs)
        return RealNode(**kwargs)

    # bringup.to_launch_actions imports launch_ros.actions.Node when called: it gets this one
    monkeypatch.setattr(launch_ros.actions, "Node", recording_node)
    description = get_launch_description_from_python_launch_file(str(REPO / "launch" / launch_file))
    context = LaunchContext()
    context.launch_configurations.update(values)
    declared: list[str] = []
    actions: list[Any] = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            declared.append(entity.name)
            entity.execute(context)  # fills in the default where the value was not given
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context) or []
        else:
            raise AssertionError(f"{launch_file}: unexpected entity {entity!r}")
    return declared, actions, built


@pytest.mark.parametrize("launch_file", sorted(LAUNCH_FILES))
def test_defaults_start_the_policy_node_for_the_files_robot(
    launch_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"checkpoint": "/ckpt/qwen_vla"}
    declared, actions, built = _expand(launch_file, values, monkeypatch)
    assert declared == [a.name for a in LAUNCH_ARGUMENTS]
    robot = LAUNCH_FILES[launch_file]
    spec = policy_node_spec(values, _config_dir(), default_robot=robot)
    assert Path(spec.parameters["robot_config"]).name == f"{robot}.yaml"
    assert spec.parameters["device"] == "cuda" and spec.parameters["dtype"] == "bfloat16"
    assert spec.parameters["autostart"] is True and spec.parameters["dry_run"] is False
    _assert_starts(actions, built, spec)


@pytest.mark.parametrize("launch_file", sorted(LAUNCH_FILES))
def test_launch_arguments_reach_the_node(launch_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "robot_config": "widowx",
        "checkpoint": "/ckpt/qwen_vla",
        "policy": "qwen_vla",
        "device": "cpu",
        "dtype": "float32",
        "instruction": "put the spoon on the towel",
        "namespace": "robot1",
        "use_sim_time": "true",
        "autostart": "false",
        "dry_run": "true",
        "log_level": "debug",
    }
    _, actions, built = _expand(launch_file, values, monkeypatch)
    spec = policy_node_spec(values, _config_dir(), default_robot=LAUNCH_FILES[launch_file])
    assert spec.parameters == {
        "robot_config": str((_config_dir() / "widowx.yaml").resolve()),
        "policy": "qwen_vla",
        "checkpoint": "/ckpt/qwen_vla",
        "device": "cpu",
        "dtype": "float32",
        "initial_instruction": "put the spoon on the towel",
        "autostart": False,
        "dry_run": True,
        "use_sim_time": True,
    }
    _assert_starts(actions, built, spec)
    assert built[0]["namespace"] == "robot1" and built[0]["ros_arguments"] == ["--log-level", "debug"]


def test_an_unknown_robot_fails_at_launch_time(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="known robots"):
        _expand("aloha.launch.py", {"robot_config": "no_such_robot"}, monkeypatch)


def test_the_sim_launch_starts_sim_and_policy_on_sim_time(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"policy": "expert_transfer_cube", "device": "cpu", "image_width": "320", "seed": "5"}
    declared, actions, built = _expand("aloha_sim.launch.py", values, monkeypatch)
    assert declared == [a.name for a in (*LAUNCH_ARGUMENTS, *SIM_ARGUMENTS)]
    specs = sim_demo_specs(values, _config_dir())
    assert [(k["executable"], k["name"]) for k in built] == [(s.executable, s.name) for s in specs]
    assert [k["parameters"] for k in built] == [[s.parameters] for s in specs]
    assert len(actions) == 2 and all(isinstance(a, RealNode) for a in actions)
    assert built[1]["parameters"][0]["use_sim_time"] is True and built[0]["parameters"][0]["seed"] == 5


def _assert_starts(actions: list[Any], built: list[dict[str, Any]], spec: Any) -> None:
    assert len(actions) == 1 and len(built) == 1, actions
    node = actions[0]
    assert isinstance(node, RealNode)
    assert node.node_package == "qvla_ros" and node.node_executable == "policy_node"
    kwargs = built[0]
    assert kwargs["package"] == spec.package == "qvla_ros"
    assert kwargs["executable"] == spec.executable == "policy_node"
    assert kwargs["name"] == spec.name == "qvla_policy"
    assert kwargs["namespace"] == (spec.namespace or None)
    assert kwargs["parameters"] == [spec.parameters]
    assert kwargs["remappings"] == list(spec.remappings)
    assert kwargs["ros_arguments"] == spec.ros_arguments()
