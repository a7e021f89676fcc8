"""The installed policy node's life around the commanding loop, over DDS against a fake WidowX:
a broken checkpoint (or one trained for other robots), dry run, the lifecycle driven by hand
(autostart false), and compressed camera topics. Each test starts its own node with the
parameters ``policy_node_spec`` gives it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import GetState  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from qvla_core.robot_io import TrajectoryOutput, load_robot_config  # noqa: E402
from qvla_msgs.msg import ActionChunk, PolicyStatus  # noqa: E402
from tests.ros.fake_robot import FakeRobot, compressed_frame, to_sec  # noqa: E402
from tests.ros.harness import REPO, InstalledNode, RosPeer, wait_for  # noqa: E402
from tests.ros.node_rig import NodeRig, assert_positions_ok, is_hold, spec_for  # noqa: E402

ROBOT = "widowx"  # one camera, 5 Hz: the cheapest robot to stream on a small machine


# ------------------------------------------------------------------------ (a) broken checkpoint
def _missing(checkpoint: Path, tmp: Path) -> Path:
    return tmp / "no_such_checkpoint"


def _corrupt_policy_config(checkpoint: Path, tmp: Path) -> Path:
    import shutil

    broken = tmp / "corrupt_config"
    shutil.copytree(checkpoint, broken)
    (broken / "policy_config.json").write_text('{"format_version": 1, "backbone_type": ', encoding="utf-8")
    return broken


def _corrupt_backbone_weights(checkpoint: Path, tmp: Path) -> Path:
    import shutil

    broken = tmp / "corrupt_weights"
    shutil.copytree(checkpoint, broken)
    (broken / "backbone" / "model.safetensors").write_bytes(b"\xff" * 64)  # not a safetensors header
    return broken


def _another_robots_checkpoint(checkpoint: Path, tmp: Path) -> Path:
    """A sound checkpoint that knows the ALOHA and the navigation base but not this robot."""
    import json
    import shutil

    other = tmp / "other_robots"
    shutil.copytree(checkpoint, other)
    stats = json.loads((other / "norm_stats.json").read_text(encoding="utf-8"))
    kept = {name: stats[name] for name in ("aloha", "vln_nav")}
    (other / "norm_stats.json").write_text(json.dumps(kept), encoding="utf-8")
    return other


BROKEN: list[tuple[str, Callable[[Path, Path], Path], Callable[[Path], list[str]]]] = [
    ("missing directory", _missing, lambda p: [str(p), "does not exist"]),
    (
        "corrupt policy_config.json",
        _corrupt_policy_config,
        lambda p: ["policy_config.json", "not valid JSON"],
    ),
    ("corrupt backbone weights", _corrupt_backbone_weights, lambda p: [str(p / "backbone"), "cannot load"]),
    (
        "checkpoint of other robots",
        _another_robots_checkpoint,
        lambda p: [str(p / "norm_stats.json"), f"embodiment '{ROBOT}'", "'aloha', 'vln_nav'"],
    ),
]


def test_broken_checkpoints_are_reported_and_never_command(
    tiny_checkpoint: Path, config_dir: Path, tmp_path: Path
) -> None:
    """One node per broken checkpoint, all at once (each in its own namespace, to save start-up
    time), against one fake robot: each stays up, unconfigured, names its problem in its status
    and on /diagnostics, and nothing ever reaches the controllers."""
    peer = RosPeer("fake_widowx_broken")
    robot = FakeRobot(peer, load_robot_config(config_dir / f"{ROBOT}.yaml"))
    diagnostics: list[DiagnosticArray] = []
    peer.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    cases: dict[str, tuple[str, list[str]]] = {}
    statuses: dict[str, list[PolicyStatus]] = {}
    chunks: list[ActionChunk] = []
    nodes: dict[str, InstalledNode] = {}
    try:
        for k, (label, breaks, words) in enumerate(BROKEN):
            checkpoint = breaks(tiny_checkpoint, tmp_path)
            namespace = f"/broken{k}"
            cases[label] = (namespace, words(checkpoint))
            statuses[label] = []
            peer.node.create_subscription(
                PolicyStatus, f"{namespace}/qvla/status", statuses[label].append, 10
            )
            peer.node.create_subscription(ActionChunk, f"{namespace}/qvla/action_chunk", chunks.append, 10)
            spec = spec_for(ROBOT, checkpoint, config_dir, namespace=namespace)
            nodes[label] = InstalledNode(
                spec.package, spec.executable, spec.parameters, name=spec.name, namespace=spec.namespace
            )
        for label, (namespace, expected) in cases.items():
            log = nodes[label].log
            status = wait_for(
                lambda s=statuses[label]: next((m for m in reversed(list(s)) if m.last_fault), None),
                90.0,
                f"{label}: a status with the fault",
            )
            for word in expected:
                assert word in status.last_fault, f"{label}: {status.last_fault!r} does not name {word!r}"
            assert status.lifecycle_state == PolicyStatus.LIFECYCLE_UNCONFIGURED

            def error_diagnostic(expected: list[str] = expected) -> DiagnosticStatus | None:
                return next(
                    (
                        d
                        for array in reversed(list(diagnostics))
                        for d in array.status
                        if d.name == "qvla: policy"
                        and d.level == DiagnosticStatus.ERROR
                        and all(word in d.message for word in expected)
                    ),
                    None,
                )

            wait_for(error_diagnostic, 10.0, f"{label}: an ERROR naming {expected} on /diagnostics")
            reply = peer.call(
                peer.node.create_client(GetState, f"{namespace}/qvla_policy/get_state"), GetState.Request()
            )
            assert reply.current_state.label == "unconfigured", label
            assert "configure failed" in log(), f"{label}:\n{log()[-2000:]}"
        time.sleep(1.0)  # the robot keeps streaming: still nothing may come back
        for label, node in nodes.items():
            assert node.alive(), f"{label}: the node died:\n{node.log()[-2000:]}"
        got = robot.snapshot()
        assert not got.all_trajectories(), "a node with a broken checkpoint sent a trajectory"
        assert not chunks
    finally:
        robot.close()
        peer.close()
        exits = {label: (node.stop(), node.log()) for label, node in nodes.items()}
    for label, (code, log) in exits.items():
        assert code == 0 and "Traceback" not in log, f"{label}: exit {code}\n{log[-3000:]}"


# ------------------------------------------------------------------------ (b) dry run
def _set_parameter(rig: NodeRig, name: str, value: ParameterValue) -> Any:
    client = rig.peer.node.create_client(SetParameters, "/qvla_policy/set_parameters")
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=value)])
    return rig.peer.call(client, request).results[0]


def _trigger(rig: NodeRig, name: str) -> bool:
    return bool(rig.peer.call(rig.peer.node.create_client(Trigger, name), Trigger.Request()).success)


def test_dry_run_publishes_chunks_but_never_a_trajectory(tiny_checkpoint: Path, config_dir: Path) -> None:
    spec = spec_for(ROBOT, tiny_checkpoint, config_dir, dry_run="true")
    assert spec.parameters["dry_run"] is True
    with NodeRig(spec, "fake_widowx_dry") as rig:
        wait_for(lambda: len(rig.robot.snapshot().chunks) >= 5, 90.0, f"chunks\n{rig.node.log()[-2000:]}")
        _, chunk = rig.robot.snapshot().chunks[-1]
        emb = rig.config.embodiment
        assert chunk.embodiment == ROBOT and list(chunk.shape) == [emb.horizon, len(emb.action)]
        assert np.isfinite(np.array(chunk.actions)).all()
        status = rig.wait_status("a dry-run status", lambda s: s.chunks_produced >= 5)
        assert status.dry_run and status.commands_sent == 0
        # stop (which holds a real robot) sends nothing in a dry run either
        assert _trigger(rig, "/qvla/stop")
        time.sleep(0.5)
        t_resume = time.time()
        assert _trigger(rig, "/qvla/resume")
        wait_for(
            lambda: any(t > t_resume for t, _ in rig.robot.snapshot().chunks), 20.0, "chunks after resume"
        )
        assert not rig.trajectories(), "a dry run sent a JointTrajectory"
        assert "DRY RUN" in rig.node.log()
        # Switching dry_run off must not be accepted silently while the node stays dry.
        off = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False)
        result = _set_parameter(rig, "dry_run", off)
        if result.successful:
            rig.wait_commands(1, timeout=10.0)  # then the robot must be commanded
        else:
            assert result.reason
            time.sleep(0.5)
            assert not rig.trajectories(), "a dry run sent a JointTrajectory"


# ------------------------------------------------------------------------ (c) lifecycle by hand
def _channel_sources(rig: NodeRig) -> dict[str, tuple[str, int]]:
    """State channel -> (JointState topic, index) in the robot's messages."""
    return {ch: (src.topic, i) for src in rig.config.ros.joint_states for i, ch in enumerate(src.channels)}


def _assert_hold_is_a_measured_position(rig: NodeRig, topic: str, hold: Any, t_hold: float) -> None:
    """The hold point is a position the robot reported (per joint, within the last 2 s)."""
    out = next(o for o in rig.config.ros.outputs if isinstance(o, TrajectoryOutput) and o.topic == topic)
    assert list(hold.joint_names) == out.joint_names
    assert_positions_ok(rig.config, hold, out.channels, f"hold on {topic}")
    sources = _channel_sources(rig)
    for value, channel in zip(hold.points[0].positions, out.channels, strict=True):
        state_topic, index = sources[channel]
        seen = [p[index] for t, p in list(rig.robot.sent_states[state_topic]) if t_hold - 2.0 <= t <= t_hold]
        assert seen and np.min(np.abs(np.array(seen) - value)) < 1e-6, (
            f"hold {channel} = {value}: not a position the robot reported"
        )


def test_lifecycle_driven_by_hand(tiny_checkpoint: Path, config_dir: Path) -> None:
    spec = spec_for(ROBOT, tiny_checkpoint, config_dir, autostart="false")
    assert spec.parameters["autostart"] is False
    unconfigured = PolicyStatus.LIFECYCLE_UNCONFIGURED
    with NodeRig(spec, "fake_widowx_lifecycle") as rig:
        robot = rig.robot
        # autostart false: the node waits, unconfigured, and sends nothing
        rig.wait_status("status while unconfigured", lambda s: s.lifecycle_state == unconfigured, 90.0)
        assert rig.lifecycle_state() == "unconfigured"
        time.sleep(1.0)
        got = robot.snapshot()
        assert not got.all_trajectories() and not got.chunks, "sent something before configure"

        assert rig.transition(Transition.TRANSITION_CONFIGURE), rig.node.log()[-2000:]
        assert rig.lifecycle_state() == "inactive"
        rig.wait_status("status inactive", lambda s: s.lifecycle_state == PolicyStatus.LIFECYCLE_INACTIVE)
        time.sleep(1.0)  # inputs stream; an inactive node computes and commands nothing
        got = robot.snapshot()
        assert not got.all_trajectories() and not got.chunks, "commanded while inactive"

        t_active = time.time()
        assert rig.transition(Transition.TRANSITION_ACTIVATE)
        assert rig.lifecycle_state() == "active"
        rig.wait_commands(3, t_active, timeout=30.0)
        controllers = [o.topic for o in rig.config.ros.outputs if isinstance(o, TrajectoryOutput)]

        t_deactivate = time.time()
        assert rig.transition(Transition.TRANSITION_DEACTIVATE)
        assert rig.lifecycle_state() == "inactive"

        def left_holding() -> bool:  # every controller's last message is a hold
            last = {topic: msg for _, topic, msg in rig.trajectories()}
            return set(last) == set(controllers) and all(is_hold(m) for m in last.values())

        wait_for(left_holding, 5.0, f"a hold on every controller after deactivate\n{rig.node.log()[-1500:]}")
        time.sleep(1.0)
        assert left_holding()
        holds = rig.holds(t_deactivate)  # none only if the robot was already held (after a fault)
        assert len(holds) <= len(controllers), f"{len(holds)} holds: one per controller at most"
        boundary = min((t for t, _, _ in holds), default=t_deactivate + 0.2)
        late = [(t, topic) for t, topic, _ in rig.commands(boundary)]
        assert not late, f"commands after the deactivate hold: {late}"
        for t, topic, msg in holds:
            _assert_hold_is_a_measured_position(rig, topic, msg, t)
        assert not [t for t, _ in robot.snapshot().chunks if t > boundary + 0.05], "chunks while inactive"

        t_cleanup = time.time()
        assert rig.transition(Transition.TRANSITION_CLEANUP)
        assert rig.lifecycle_state() == "unconfigured"
        rig.wait_status("status unconfigured after cleanup", lambda s: s.lifecycle_state == unconfigured)
        time.sleep(0.5)
        assert not rig.trajectories(t_cleanup) and rig.node.alive()

        # and it comes back: configure + activate again commands the robot
        assert rig.transition(Transition.TRANSITION_CONFIGURE)
        t_again = time.time()
        assert rig.transition(Transition.TRANSITION_ACTIVATE)
        rig.wait_commands(2, t_again, timeout=30.0)

        # Ctrl-C (SIGINT, what launch sends): the robot is left holding, not running out the plan
        t_exit = time.time()
        assert rig.node.stop() == 0, rig.node.log()[-2000:]
        wait_for(left_holding, 5.0, f"a hold on every controller after SIGINT\n{rig.node.log()[-1500:]}")
        exit_holds = rig.holds(t_exit)
        assert exit_holds, "SIGINT: no hold; the robot keeps executing its last trajectory"
        for t, topic, msg in exit_holds:
            _assert_hold_is_a_measured_position(rig, topic, msg, t)


# ------------------------------------------------------------------------ (d) compressed cameras
def test_compressed_camera_topics_drive_the_robot(
    tiny_checkpoint: Path, config_dir: Path, tmp_path: Path
) -> None:
    data = yaml.safe_load((REPO / "config" / "robots" / f"{ROBOT}.yaml").read_text(encoding="utf-8"))
    for cam in data["ros"]["cameras"]:
        cam["topic"] += "/compressed"  # README: a topic ending in /compressed is a CompressedImage
    robot_yaml = tmp_path / f"{ROBOT}_compressed.yaml"
    robot_yaml.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with NodeRig(spec_for(robot_yaml, tiny_checkpoint, config_dir), "fake_widowx_compressed") as rig:
        cameras = rig.config.ros.cameras
        assert all(c.compressed for c in cameras)
        rig.wait_commands(3, timeout=90.0)  # JPEG frames (what FakeRobot sends on /compressed topics)
        subscribed = dict(rig.peer.node.get_subscriber_names_and_types_by_node("qvla_policy", "/"))
        for cam in cameras:
            assert subscribed.get(cam.topic) == ["sensor_msgs/msg/CompressedImage"], subscribed
            assert cam.topic.removesuffix("/compressed") not in subscribed
        # PNG works as well
        rng = np.random.default_rng(1)
        for cam in cameras:
            spec = next(c for c in rig.config.embodiment.cameras if c.name == cam.camera)
            rgb = rng.integers(0, 255, (spec.height, spec.width, 3), dtype=np.uint8)
            rig.robot.image_override[cam.camera] = compressed_frame(rgb, "png", cam.camera)
        t_png = time.time() + 0.1  # observations stamped after this hold PNG frames only

        def from_png() -> int:
            got = rig.robot.snapshot()
            observed = {to_sec(c.header.stamp): to_sec(c.observation_stamp) for _, c in got.chunks}
            return sum(1 for _, _, m in rig.commands() if observed.get(to_sec(m.header.stamp), 0.0) > t_png)

        wait_for(lambda: from_png() >= 3, 30.0, f"commands from PNG frames\n{rig.node.log()[-2000:]}")
        assert "rejected input" not in rig.node.log()
        for _, topic, msg in rig.commands():
            out = next(
                o for o in rig.config.ros.outputs if isinstance(o, TrajectoryOutput) and o.topic == topic
            )
            assert_positions_ok(rig.config, msg, out.channels, topic)
