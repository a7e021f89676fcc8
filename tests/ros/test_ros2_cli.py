"""The README's ROS 2 commands, typed as a user types them (tests/ros/ros2_commands.py): the sim
launch driven with ``ros2 service call``, ``ros2 lifecycle``, ``ros2 param``, ``ros2 topic echo``
and Ctrl-C; the robot launch files against a test robot; bad launch input; the tools on PATH.

What the controllers receive is checked by an rclpy node of the test listening on their topics.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.ros.ros2_commands import require_ros2_tools

pytestmark = pytest.mark.ros

require_ros2_tools()

from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from qvla_core.robot_io import PoseOutput, RobotConfig, TrajectoryOutput, load_robot_config  # noqa: E402
from qvla_msgs.msg import PolicyStatus  # noqa: E402
from tests.ros.fake_robot import FakeRobot  # noqa: E402
from tests.ros.harness import INSTALL, REPO, RosPeer, wait_for  # noqa: E402
from tests.ros.node_rig import is_hold  # noqa: E402
from tests.ros.ros2_commands import (  # noqa: E402
    Launch,
    Result,
    assert_clean_exit,
    node_lines,
    run,
    run_until,
)

INSTRUCTION = "pick up the cube"
# The README's command; smaller images than the default 640x480 (rendering is the cost on 2 cores).
SIM_LAUNCH = "ros2 launch qvla_ros aloha_sim.launch.py policy:=expert_transfer_cube device:=cpu"
SIM_IMAGES = "image_width:=160 image_height:=120"
SET_INSTRUCTION = (
    "ros2 service call /qvla/set_instruction qvla_msgs/srv/SetInstruction "
    f"\"{{instruction: '{INSTRUCTION}', reset: true}}\""
)


@pytest.fixture(scope="module", autouse=True)
def _ros2_daemon() -> Iterator[None]:
    """The first ros2 command starts the ros2 daemon (as for a user); stop it when done here."""
    yield
    run("ros2 daemon stop", timeout=30.0)


def eventually(predicate: Callable[[], Any], timeout: float, what: str, launch: Launch) -> None:
    try:
        wait_for(predicate, timeout, what, poll=0.05)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{launch.output()[-4000:]}") from None


def ok(result: Result, expected: str) -> None:
    assert result.returncode == 0 and expected in result.output, result


class ControllerTap:
    """Listens where the robot's joint_trajectory controllers listen, and to /qvla/status."""

    def __init__(self, config: RobotConfig, name: str) -> None:
        self.peer = RosPeer(name)
        self.controllers = [o.topic for o in config.ros.outputs if isinstance(o, TrajectoryOutput)]
        self._lock = threading.Lock()
        self._received: list[tuple[float, str, JointTrajectory]] = []
        self._statuses: list[PolicyStatus] = []
        for topic in self.controllers:
            self.peer.node.create_subscription(JointTrajectory, topic, lambda m, t=topic: self._add(t, m), 10)
        self.peer.node.create_subscription(PolicyStatus, "/qvla/status", self._add_status, 10)

    def _add(self, topic: str, msg: JointTrajectory) -> None:
        with self._lock:
            self._received.append((time.time(), topic, msg))

    def _add_status(self, msg: PolicyStatus) -> None:
        with self._lock:
            self._statuses.append(msg)

    def received(self, since: float = 0.0) -> list[tuple[float, str, JointTrajectory]]:
        with self._lock:
            return [r for r in self._received if r[0] >= since]

    def commanding(self, since: float) -> bool:
        """Every controller got a trajectory (not a hold) after ``since``."""
        return {topic for _, topic, msg in self.received(since) if not is_hold(msg)} == set(self.controllers)

    def holding(self, since: float) -> bool:
        """Every controller got a hold after ``since``, and nothing after it."""
        last = {topic: msg for _, topic, msg in self.received(since)}
        return set(last) == set(self.controllers) and all(is_hold(m) for m in last.values())

    def status(self) -> PolicyStatus | None:
        with self._lock:
            return self._statuses[-1] if self._statuses else None

    def close(self) -> None:
        self.peer.close()


# ------------------------------------------------------------------ the sim launch, by hand
@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Launch, ControllerTap]]:
    tap = ControllerTap(load_robot_config(REPO / "config" / "robots" / "aloha.yaml"), "qvla_cli_tap")
    launch = Launch(f"{SIM_LAUNCH} {SIM_IMAGES}", tmp_path_factory.mktemp("sim_launch"))

    def active() -> bool:
        status = tap.status()
        return status is not None and status.lifecycle_state == PolicyStatus.LIFECYCLE_ACTIVE

    try:
        eventually(active, 120.0, "the policy node active on /qvla/status", launch)
        yield launch, tap
    finally:
        launch.close()
        tap.close()


@pytest.fixture
def moving(sim: tuple[Launch, ControllerTap]) -> tuple[Launch, ControllerTap]:
    """The sim launch with the arms moving: the policy idles until it has an instruction (the
    first test sets it with the README's service call; a test run alone sets it here)."""
    launch, tap = sim
    if not tap.commanding(time.time() - 1.0):
        ok(run(SET_INSTRUCTION), "success=True")
    eventually(lambda: tap.commanding(time.time() - 1.0), 30.0, "the expert commanding both arms", launch)
    return launch, tap


def test_service_call_sets_the_instruction(sim: tuple[Launch, ControllerTap]) -> None:
    launch, tap = sim
    t_call = time.time()
    reply = run(SET_INSTRUCTION)
    ok(reply, "success=True")
    eventually(
        lambda: (s := tap.status()) is not None and s.instruction == INSTRUCTION,
        10.0,
        "the instruction on /qvla/status",
        launch,
    )
    eventually(lambda: tap.commanding(t_call), 30.0, "the expert commanding both arms", launch)
    echo = run_until(
        "ros2 topic echo --once /qvla/status", lambda r: f"instruction: {INSTRUCTION}" in r.output
    )
    assert "lifecycle_state: 3" in echo.output, echo  # active


def test_lifecycle_by_hand_holds_both_arms(moving: tuple[Launch, ControllerTap]) -> None:
    launch, tap = moving
    state = run_until("ros2 lifecycle get /qvla_policy", lambda r: "Node not found" not in r.output)
    assert state.output.strip() == "active [3]", state
    t_deactivate = time.time()
    ok(run("ros2 lifecycle set /qvla_policy deactivate"), "Transitioning successful")
    eventually(lambda: tap.holding(t_deactivate), 10.0, "a hold on both arm controllers", launch)
    time.sleep(1.0)
    assert tap.holding(t_deactivate), "a command followed the deactivate hold"
    t_activate = time.time()
    ok(run("ros2 lifecycle set /qvla_policy activate"), "Transitioning successful")
    eventually(lambda: tap.commanding(t_activate), 30.0, "commands to both arms after activate", launch)


def test_parameters_from_the_command_line(sim: tuple[Launch, ControllerTap]) -> None:
    refused = run("ros2 param set /qvla_policy device cuda")
    assert "Setting parameter failed: Trying to set a read-only parameter: device" in refused.output, refused
    described = run("ros2 param describe /qvla_policy status_rate_hz dtype")
    ok(described, "Parameter name: status_rate_hz")
    for line in (
        "Description: Rate of /qvla/status and /diagnostics [Hz]; may be changed while running.",
        "Min value: 0.2",
        "Max value: 100.0",
        "Parameter name: dtype",
        "Read only: true",
        "Additional constraints: one of: float32, bfloat16",
    ):
        assert line in described.output, described


def test_ctrl_c_holds_then_every_node_exits_cleanly(moving: tuple[Launch, ControllerTap]) -> None:
    launch, tap = moving
    t_interrupt = time.time()
    # Twice, as impatient users do: a late signal used to break the sim node's shutdown (a
    # KeyboardInterrupt traceback, then a segfault; or exit code -2 after a clean stop).
    seconds = launch.ctrl_c(presses=2)
    assert seconds < 5.0, f"the nodes took {seconds:.1f} s to exit after Ctrl-C:\n{launch.output()[-3000:]}"
    eventually(lambda: tap.holding(t_interrupt), 2.0, "a hold on both arm controllers after Ctrl-C", launch)
    assert_clean_exit(launch, ["sim_node", "policy_node"])


# ------------------------------------------------------------------ the robot launch files
def test_robot_launch_files_drive_a_test_robot(
    tiny_checkpoint: Path, config_dir: Path, tmp_path: Path
) -> None:
    """aloha.launch.py and vln_nav.launch.py at once (each in its namespace): commands reach the
    arm's controllers, goal poses and paths the navigation stack's topics."""
    peer = RosPeer("qvla_cli_robots")
    arm = FakeRobot(peer, load_robot_config(config_dir / "aloha.yaml"), camera_hz=10.0)
    nav = FakeRobot(peer, load_robot_config(config_dir / "vln_nav.yaml"), camera_hz=10.0)
    common = f"checkpoint:={tiny_checkpoint} device:=cpu"
    launches = [
        Launch(
            f"ros2 launch qvla_ros aloha.launch.py {common} namespace:=arm instruction:='{INSTRUCTION}'",
            tmp_path,
            "aloha",
        ),
        Launch(
            f"ros2 launch qvla_ros vln_nav.launch.py {common} namespace:=nav instruction:='go to the door'",
            tmp_path,
            "vln_nav",
        ),
    ]
    pose_topics = [o.topic for o in nav.config.ros.outputs if isinstance(o, PoseOutput)]

    def arm_commanded() -> bool:
        got = arm.snapshot().trajectories
        return all(any(not is_hold(m) for _, m in got[t]) for t in got)

    def nav_goals() -> bool:
        got = nav.snapshot()
        return all((got.poses | got.paths)[t] for t in pose_topics)

    try:
        eventually(arm_commanded, 120.0, "trajectories on every ALOHA controller", launches[0])
        eventually(nav_goals, 60.0, f"goal poses and paths on {pose_topics}", launches[1])
    finally:
        arm.close()
        nav.close()
        peer.close()
        for launch in launches:
            launch.close()
    for launch in launches:
        assert_clean_exit(launch, ["policy_node"])


# ------------------------------------------------------------------ bad launch input
def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def test_bad_launch_input_is_one_clear_line_and_the_node_stays_up(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Each bad argument: one error line naming it, the node up and unconfigured for ``ros2
    lifecycle``; and a retry once the problem is gone (the missing checkpoint appears)."""
    missing = tmp_path / "no_such_checkpoint"
    cases = {  # namespace: (launch arguments, what the one error line must say)
        "no_checkpoint": ("", ["parameter checkpoint is empty", "checkpoint:="]),
        "missing": (f"checkpoint:={missing} device:=cpu", [str(missing), "does not exist"]),
        "bad_dtype": (f"checkpoint:={tiny_checkpoint} device:=cpu dtype:=float16", ["dtype", "'float16'"]),
    }
    if not _cuda_available():
        cases["no_cuda"] = (
            f"checkpoint:={tiny_checkpoint} device:=cuda",
            ["device", "CUDA is not available", "device:=cpu"],
        )
    launches = {
        ns: Launch(f"ros2 launch qvla_ros aloha.launch.py {args} namespace:={ns}", tmp_path, ns)
        for ns, (args, _) in cases.items()
    }
    try:
        for ns, (_, words) in cases.items():
            launches[ns].wait_output(r"\[policy_node-\d+\] \[ERROR\]", 120.0)
            errors = [line for line in node_lines(launches[ns].output(), "policy_node") if "[ERROR]" in line]
            assert len(errors) == 1, f"{ns}: {len(errors)} error lines:\n" + "\n".join(errors)
            for word in words:
                assert word in errors[0], f"{ns}: {errors[0]!r} does not say {word!r}"
        with ThreadPoolExecutor(len(cases)) as pool:
            states = dict(
                zip(
                    cases,
                    pool.map(
                        lambda ns: run_until(
                            f"ros2 lifecycle get /{ns}/qvla_policy",
                            lambda r: "Node not found" not in r.output,
                        ),
                        cases,
                    ),
                    strict=True,
                )
            )
        for ns, state in states.items():
            assert state.output.strip() == "unconfigured [1]", f"{ns}: {state}"
        shutil.copytree(tiny_checkpoint, missing)
        retry = run("ros2 lifecycle set /missing/qvla_policy configure", timeout=120.0)
        ok(retry, "Transitioning successful")
    finally:
        for launch in launches.values():
            launch.close()
    for launch in launches.values():
        assert_clean_exit(launch, ["policy_node"])


def test_an_unknown_robot_config_stops_the_launch_with_one_line(tmp_path: Path) -> None:
    launch = Launch(
        "ros2 launch qvla_ros aloha.launch.py robot_config:=no_such_robot checkpoint:=/ckpt device:=cpu",
        tmp_path,
    )
    code = launch.wait_exit(60.0)
    out = launch.output()
    named = [line for line in out.splitlines() if "no_such_robot" in line]
    assert code != 0 and "Traceback" not in out and "process started" not in out, out
    assert len(named) == 1, out
    assert "robot_config 'no_such_robot'" in named[0], named[0]
    assert "known robots: aloha, franka, vln_nav, widowx" in named[0], named[0]


# ------------------------------------------------------------------ the tools
def _console_scripts(package: str) -> list[str]:
    return [
        ep.name
        for ep in importlib.metadata.distribution(package).entry_points
        if ep.group == "console_scripts"
    ]


def test_tools_are_on_path_after_sourcing_and_through_ros2_run(tmp_path: Path) -> None:
    tools = {(pkg, name) for pkg in ("qvla_core", "qvla_ros") for name in _console_scripts(pkg)}
    assert ("qvla_core", "qvla-build-checkpoint") in tools
    found = run("; ".join(f"command -v {name} || echo {name}: not on PATH" for _, name in sorted(tools)))
    where = dict(zip(sorted(tools), found.output.splitlines(), strict=True))
    for (pkg, name), path in where.items():
        assert Path(path) == INSTALL / pkg / "lib" / pkg / name, f"{name}: {path}"
    args = f"--preset tiny --robot {REPO}/config/robots/widowx.yaml --stats-from-limits --no-weights"
    commands = [
        f"qvla-build-checkpoint --out {tmp_path}/on_path {args}",
        f"ros2 run qvla_core qvla-build-checkpoint --out {tmp_path}/ros2_run {args}",
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: run(c, timeout=120.0), commands))
    for result, out in zip(results, ("on_path", "ros2_run"), strict=True):
        assert result.returncode == 0, result
        assert (tmp_path / out / "policy_config.json").is_file(), result
