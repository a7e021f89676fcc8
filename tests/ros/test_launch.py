"""The launch files, loaded with the real launch / launch_ros Python API: each declares exactly
bringup's launch arguments and starts the qvla_ros policy_node with the parameters
``policy_node_spec`` computes (the specs the integration tests start). launch_ros is not on PyPI:
scripts/test.sh installs it from shared/ros2-extras; without it this skips (fails under CI=true).
test_ros2_cli.py runs the same files through ``ros2 launch``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ros.ros2_commands import require_ros2_tools

pytestmark = pytest.mark.ros

require_ros2_tools()

import launch_ros.actions  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch.frontend.parse_substitution import parse_substitution  # noqa: E402
from launch.launch_description_sources import get_launch_description_from_python_launch_file  # noqa: E402

from launch import LaunchContext  # noqa: E402
from qvla_core.robot_io import load_robot_config  # noqa: E402
from qvla_ros.tools.bringup import LAUNCH_ARGUMENTS, SIM_ARGUMENTS, policy_node_spec, sim_demo_specs  # noqa: E402
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


def test_the_sim_launch_starts_sim_and_policy_on_sim_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    values = {"policy": "expert_transfer_cube", "device": "cpu", "image_width": "320", "seed": "5"}
    declared, actions, built = _expand("aloha_sim.launch.py", values, monkeypatch)
    assert declared == [a.name for a in (*LAUNCH_ARGUMENTS, *SIM_ARGUMENTS)]
    specs = sim_demo_specs(values, _config_dir(), variant_dir=tmp_path)
    assert [(k["executable"], k["name"]) for k in built] == [(s.executable, s.name) for s in specs]
    # another image size: the launch wrote its own copy of the robot YAML (a temporary directory)
    launched = [k["parameters"][0] for k in built]
    robots = {p.pop("robot_config") for p in launched}
    assert len(robots) == 1, "sim and policy must run one robot YAML"
    assert launched == [{k: v for k, v in s.parameters.items() if k != "robot_config"} for s in specs]
    cameras = load_robot_config(robots.pop()).embodiment.cameras
    assert {(c.width, c.height) for c in cameras} == {(320, 480)}
    assert len(actions) == 2 and all(isinstance(a, RealNode) for a in actions)
    assert launched[1]["use_sim_time"] is True and launched[0]["seed"] == 5


def test_substitutions_parse_with_the_locked_lark() -> None:
    """launch's substitution grammar (XML/YAML launch files, ``$(var ...)``) runs on the lark module
    that lock.txt's lark-parser 0.12 provides (requirements/ros2-extras.txt says why not lark 1.x)."""
    parsed = parse_substitution("$(var robot_config)/x $(env HOME)")
    assert [type(p).__name__ for p in parsed] == [
        "LaunchConfiguration",
        "TextSubstitution",
        "EnvironmentVariable",
    ]


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
