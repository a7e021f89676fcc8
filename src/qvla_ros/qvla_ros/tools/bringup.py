"""What the launch files start, with which parameters: plain Python, tested without `launch`.

``launch/*.launch.py`` only declare ``LAUNCH_ARGUMENTS`` and turn ``node_specs(...)``
into ``launch_ros.actions.Node`` actions (:func:`to_launch_actions`); every decision
lives here, and the integration tests start exactly these specs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qvla_core.robot_io import load_robot_config


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    log_level: str = "info"

    def ros_arguments(self) -> list[str]:
        return ["--log-level", self.log_level]


LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "robot_config", "", "Robot YAML: a path, or the name of one in share/qvla_ros/config/robots."
    ),
    LaunchArgument("checkpoint", "", "Local Qwen-VLA checkpoint directory (nothing is downloaded)."),
    LaunchArgument(
        "policy", "qwen_vla", "qwen_vla, expert_transfer_cube (ALOHA sim) or expert_vln_nav (navigation sim)."
    ),
    LaunchArgument("device", "cuda", "Torch device: cuda, cuda:N or cpu."),
    LaunchArgument("dtype", "bfloat16", "Model dtype: bfloat16 or float32."),
    LaunchArgument("instruction", "", "Initial task instruction (empty: wait for /qvla/set_instruction)."),
    LaunchArgument("namespace", "", "Namespace of the policy node and its qvla/* interfaces."),
    LaunchArgument("use_sim_time", "false", "Use /clock (simulation) instead of the wall clock."),
    LaunchArgument(
        "autostart", "true", "Configure and activate on start-up (false: drive the lifecycle yourself)."
    ),
    LaunchArgument("dry_run", "false", "Publish /qvla/action_chunk only; never command the robot."),
    LaunchArgument("log_level", "info", "Log level of the nodes: debug, info, warn, error."),
)

DEFAULT_ROBOT = {"aloha": "aloha", "vln_nav": "vln_nav"}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_bool(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {value!r}")


def resolve_robot_config(value: str, config_dir: Path) -> Path:
    """A robot YAML path, or a bare robot name looked up in ``config_dir`` (share/qvla_ros/config/robots)."""
    candidate = Path(value).expanduser()
    path = candidate if candidate.suffix in (".yaml", ".yml") else config_dir / f"{value}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in config_dir.glob("*.yaml")))
        raise FileNotFoundError(
            f"robot_config {value!r}: no robot YAML at {path}; known robots: {known} (or give a path)"
        )
    return path.resolve()


def policy_node_spec(values: dict[str, str], config_dir: Path, default_robot: str) -> NodeSpec:
    """The policy node for one robot, from launch-argument values (strings, as launch gives them)."""
    args = {a.name: a.default for a in LAUNCH_ARGUMENTS} | values
    robot = resolve_robot_config(args["robot_config"] or default_robot, config_dir)
    load_robot_config(robot)  # fail at launch time, naming file/key/value, not later in the node
    params: dict[str, Any] = {
        "robot_config": str(robot),
        "policy": args["policy"],
        "checkpoint": str(Path(args["checkpoint"]).expanduser()) if args["checkpoint"] else "",
        "device": args["device"],
        "dtype": args["dtype"],
        "initial_instruction": args["instruction"],
        "autostart": parse_bool("autostart", args["autostart"]),
        "dry_run": parse_bool("dry_run", args["dry_run"]),
        "use_sim_time": parse_bool("use_sim_time", args["use_sim_time"]),
    }
    return NodeSpec(
        package="qvla_ros",
        executable="policy_node",
        name="qvla_policy",
        namespace=args["namespace"],
        parameters=params,
        log_level=args["log_level"],
    )


SIM_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("task", "transfer_cube", "MuJoCo ALOHA scene: transfer_cube or insertion."),
    LaunchArgument("seed", "0", "Seed of the first episode (object pose); each reset takes the next."),
    LaunchArgument("image_width", "", "Width of the rendered camera images [px] (empty: the robot YAML's)."),
    LaunchArgument(
        "image_height", "", "Height of the rendered camera images [px] (empty: the robot YAML's)."
    ),
    LaunchArgument("camera_rate_hz", "25.0", "Camera rate in sim time [Hz]."),
    LaunchArgument("real_time_factor", "1.0", "Sim seconds per wall second (0 = as fast as possible)."),
)


def sim_node_spec(values: dict[str, str], config_dir: Path) -> NodeSpec:
    """The MuJoCo ALOHA sim node, wired by the same robot YAML as the policy node."""
    args = {a.name: a.default for a in (*LAUNCH_ARGUMENTS, *SIM_ARGUMENTS)} | values
    robot = resolve_robot_config(args["robot_config"] or "aloha", config_dir)
    first_camera = load_robot_config(robot).embodiment.cameras[0]
    params: dict[str, Any] = {
        "robot_config": str(robot),
        "task": args["task"],
        "seed": int(args["seed"]),
        "image_width": int(args["image_width"] or first_camera.width),
        "image_height": int(args["image_height"] or first_camera.height),
        "camera_rate_hz": float(args["camera_rate_hz"]),
        "real_time_factor": float(args["real_time_factor"]),
    }
    return NodeSpec(
        package="qvla_ros",
        executable="sim_node",
        name="qvla_sim",
        parameters=params,
        log_level=args["log_level"],
    )


def sim_demo_specs(
    values: dict[str, str], config_dir: Path, variant_dir: Path | None = None
) -> list[NodeSpec]:
    """Sim + policy node on the sim's clock (what ``aloha_sim.launch.py`` and the demo start).

    The policy node rejects every frame whose size differs from its robot YAML's cameras, so when
    ``image_width``/``image_height`` ask for another size, both nodes get a copy of the YAML with every
    camera at that size (written to ``variant_dir``, default a new temporary directory)."""
    values = values | {"use_sim_time": "true"}
    sim = sim_node_spec(values, config_dir)
    robot = Path(sim.parameters["robot_config"])
    size = (sim.parameters["image_width"], sim.parameters["image_height"])
    if any((c.width, c.height) != size for c in load_robot_config(robot).embodiment.cameras):
        folder = variant_dir or Path(tempfile.mkdtemp(prefix="qvla-sim-"))
        variant = write_robot_variant(
            robot, folder / f"{robot.stem}_{size[0]}x{size[1]}.yaml", camera_size=size
        )
        values = values | {"robot_config": str(variant)}
        sim = sim_node_spec(values, config_dir)
    return [sim, policy_node_spec(values, config_dir, default_robot="aloha")]


NAV_SIM_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument(
        "seed", "0", "Seed of the first scene (rooms, objects, instruction); each reset takes the next."
    ),
    LaunchArgument("camera_rate_hz", "10.0", "Camera rate in sim time [Hz]."),
    LaunchArgument("real_time_factor", "1.0", "Sim seconds per wall second (0 = as fast as possible)."),
    LaunchArgument("follow", "path", "What drives the simulated base: path, goal_pose or latest."),
)


def nav_sim_demo_specs(values: dict[str, str], config_dir: Path) -> list[NodeSpec]:
    """The navigation sim + the policy node on the sim's clock (``vln_nav_sim.launch.py``).

    Without an ``instruction`` the policy node starts with the first scene's ("go to the blue box");
    the sim publishes every later episode's on /qvla/instruction."""
    from qvla_core.sim.nav.generate import generate_scene

    args = {a.name: a.default for a in (*LAUNCH_ARGUMENTS, *NAV_SIM_ARGUMENTS)} | values
    robot = resolve_robot_config(args["robot_config"] or "vln_nav", config_dir)
    load_robot_config(robot)
    seed = int(args["seed"])
    instruction = args["instruction"] or generate_scene(seed).instruction
    sim = NodeSpec(
        package="qvla_ros",
        executable="nav_sim_node",
        name="qvla_nav_sim",
        parameters={
            "robot_config": str(robot),
            "seed": seed,
            "camera_rate_hz": float(args["camera_rate_hz"]),
            "real_time_factor": float(args["real_time_factor"]),
            "follow": args["follow"],
        },
        log_level=args["log_level"],
    )
    policy_values = values | {"use_sim_time": "true", "instruction": instruction, "robot_config": str(robot)}
    return [sim, policy_node_spec(policy_values, config_dir, default_robot="vln_nav")]


def write_robot_variant(
    source: Path,
    dest: Path,
    chunking_mode: str = "",
    camera_size: tuple[int, int] | None = None,
    cameras: list[str] | None = None,
    action_source: str = "",
    history_frames: int | None = None,
) -> Path:
    """A copy of a robot YAML with another chunk-splicing mode, every camera at ``(width, height)``,
    only the ``cameras`` named (embodiment and ros.cameras, in the YAML's order), another
    ``ros.recording.actions`` source (``commanded_trajectory``: the commands sent to the controllers,
    what a simulated collection records) and/or every camera's history ``history_frames`` long (same
    stride), validated before it is used (a bad value fails here, naming the key)."""
    import yaml

    data = yaml.safe_load(Path(source).read_text())
    if chunking_mode:
        data.setdefault("ros", {}).setdefault("chunking", {})["mode"] = chunking_mode
    if camera_size is not None:
        for cam in data["embodiment"]["cameras"]:
            cam["width"], cam["height"] = camera_size
    if history_frames is not None:
        for cam in data["embodiment"]["cameras"]:
            cam.setdefault("history", {})["frames"] = history_frames
    if cameras is not None:
        known = [c["name"] for c in data["embodiment"]["cameras"]]
        unknown = [c for c in cameras if c not in known]
        if unknown or not cameras:
            raise ValueError(f"cameras {cameras}: {source} has cameras {known}")
        data["embodiment"]["cameras"] = [c for c in data["embodiment"]["cameras"] if c["name"] in cameras]
        data["ros"]["cameras"] = [c for c in data["ros"]["cameras"] if c["camera"] in cameras]
    if action_source:
        data["ros"]["recording"] = {"actions": {"source": action_source}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(data, sort_keys=False))
    load_robot_config(dest)
    return dest


def to_launch_actions(specs: list[NodeSpec]) -> list[Any]:
    """launch_ros Node actions for the specs (imports launch_ros: only on a ROS 2 distribution)."""
    from launch_ros.actions import Node

    return [
        Node(
            package=s.package,
            executable=s.executable,
            name=s.name,
            namespace=s.namespace or None,
            parameters=[s.parameters],
            remappings=list(s.remappings),
            ros_arguments=s.ros_arguments(),
            output="screen",
            emulate_tty=True,
        )
        for s in specs
    ]
