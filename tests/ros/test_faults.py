"""Faults injected through real DDS into the installed policy node (started as aloha.launch.py starts
it), with a policy plugin whose model calls the test can make hang: what the robot's controllers
receive, when the hold comes, what /qvla/status and /diagnostics say, and that the node recovers
without a restart once the input is healthy again."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock

from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_msgs.msg import PolicyStatus
from qvla_msgs.srv import SetInstruction
from qvla_ros.tools.bringup import policy_node_spec
from tests.ros.fake_robot import FakeRobot, to_sec
from tests.ros.harness import REPO, InstalledNode, RosPeer, wait_for
from tests.ros.node_rig import is_hold

pytestmark = pytest.mark.ros

PLUGIN = "tests.ros.fault_policy:make"
LEFT, RIGHT = "/follower_left/joint_states", "/follower_right/joint_states"
LEFT_CTRL, RIGHT_CTRL = (
    "/follower_left/arm_controller/joint_trajectory",
    "/follower_right/arm_controller/joint_trajectory",
)


class FaultRig:
    def __init__(
        self, node: InstalledNode, peer: RosPeer, robot: FakeRobot, config: RobotConfig, faults: Path
    ):
        self.node, self.peer, self.robot, self.config, self.faults = node, peer, robot, config, faults
        self.diagnostics: list[tuple[float, Any]] = []
        self.sim_clock: SimClock | None = None
        self._lock = threading.Lock()
        peer.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.diagnostics += [(time.time(), s) for s in msg.status if s.name == "qvla: policy"]

    def diag_since(self, since: float) -> list[Any]:
        with self._lock:
            return [s for t, s in self.diagnostics if t >= since]

    def commands(self, since: float) -> list[tuple[float, str, Any]]:
        return [c for c in self.robot.snapshot().all_trajectories() if c[0] >= since and not is_hold(c[2])]

    def holds(self, since: float) -> list[tuple[float, str, Any]]:
        return [c for c in self.robot.snapshot().all_trajectories() if c[0] >= since and is_hold(c[2])]

    def wait_commands(self, n: int, since: float, timeout: float = 20.0) -> None:
        wait_for(lambda: len(self.commands(since)) >= n, timeout, f"{n} commands\n{self.node.log()[-2000:]}")

    def wait_hold(self, since: float, what: str, timeout: float = 5.0) -> float:
        holds = wait_for(
            lambda: self.holds(since), timeout, f"a hold after {what}\n{self.node.log()[-2000:]}"
        )
        return float(holds[0][0])

    def status(self, since: float) -> PolicyStatus:
        def newer() -> PolicyStatus | None:
            s = self.robot.last_status()
            return s if s is not None and to_sec(s.header.stamp) >= since else None

        return wait_for(newer, 5.0, "a status message")

    def hold_limit(self, input_limit: float) -> float:
        """The input's age limit, plus two control periods and 50 ms for DDS and this process."""
        return input_limit + 2 * self.config.embodiment.dt + 0.05


class SimClock:
    """/clock at 200 Hz, following wall time from an origin that ``jump_back`` moves."""

    def __init__(self, peer: RosPeer) -> None:
        self._origin = time.time() - 1000.0  # sim time starts at 1000 s
        self._pub = peer.node.create_publisher(Clock, "/clock", 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> float:
        return time.time() - self._origin

    def jump_back(self, seconds: float) -> None:
        self._origin += seconds

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            t = self.now()
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = int(t), int((t - int(t)) * 1e9)
            self._pub.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def start_rig(
    tiny_checkpoint: Path, config_dir: Path, tmp: Path, sim_clock: bool = False, **overrides: str
) -> FaultRig:
    values = {
        "checkpoint": str(tiny_checkpoint),
        "device": "cpu",
        "dtype": "float32",
        "instruction": "pick up the cube",
        "policy": PLUGIN,
    }
    spec = policy_node_spec(values | overrides, config_dir, default_robot="aloha")
    config = load_robot_config(spec.parameters["robot_config"])
    env = {"QVLA_FAULT_DIR": str(tmp), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    node = InstalledNode(
        spec.package, spec.executable, spec.parameters, name=spec.name, log_level=spec.log_level, env=env
    )
    peer = RosPeer("fault_robot")
    clock = SimClock(peer) if sim_clock else None
    robot = FakeRobot(peer, config, clock=clock.now if clock else time.time)
    rig = FaultRig(node, peer, robot, config, tmp)
    rig.sim_clock = clock
    return rig


def close_rig(rig: FaultRig) -> None:
    rig.robot.close()
    if rig.sim_clock is not None:
        rig.sim_clock.close()
    rig.peer.close()
    code = rig.node.stop()
    log = rig.node.log()
    assert code == 0, f"policy node exited with {code}:\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def rig(
    tiny_checkpoint: Path, config_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultRig]:
    rig = start_rig(tiny_checkpoint, config_dir, tmp_path_factory.mktemp("faults"))
    try:
        rig.wait_commands(4, 0.0, timeout=60.0)
        yield rig
    finally:
        close_rig(rig)


def faulted_on(rig: FaultRig, since: float, words: str, *, recovers_fast: bool = False) -> None:
    """A /qvla/status and a /diagnostics message since ``since`` name the fault (every message
    received is searched: on a loaded machine the next fault, e.g. a joint-state gap of the robot
    stand-in, can replace it in last_fault within a status period). Where the node recovers within a
    status period (``recovers_fast``) the fault may show only in last_fault and the diagnostic's text,
    which keep it after recovery, not in a FAULT run state or an ERROR level."""
    want = (
        (PolicyStatus.RUN_FAULT,) if not recovers_fast else (PolicyStatus.RUN_FAULT, PolicyStatus.RUN_RUNNING)
    )

    def statuses() -> list[PolicyStatus]:
        return [
            s
            for s in rig.robot.snapshot().statuses
            if to_sec(s.header.stamp) >= since and s.run_state in want and words in s.last_fault
        ]

    wait_for(statuses, 5.0, f"status naming {words!r}\n{rig.node.log()[-1500:]}")
    levels = (b"\x02",) if not recovers_fast else (b"\x00", b"\x01", b"\x02")
    wait_for(
        lambda: [d for d in rig.diag_since(since) if d.level in levels and words in d.message],
        5.0,
        f"a diagnostic naming {words!r}",
    )


def test_camera_driver_dies_and_comes_back(rig: FaultRig) -> None:
    rig.wait_commands(1, time.time())
    last_stamp = rig.robot.kill_camera("cam_low")
    t_kill = time.time()
    try:
        t_hold = rig.wait_hold(last_stamp, "cam_low's driver died")
        late = t_hold - last_stamp
        assert late <= rig.hold_limit(rig.config.ros.safety.max_image_age_s), (
            f"hold {late:.3f} s after the last frame"
        )
        faulted_on(rig, t_kill, "cam_low")
        time.sleep(0.5)
        assert not rig.commands(t_hold + 0.05), "a command after the camera died"
        assert rig.node.alive()
    finally:
        rig.robot.restart_camera("cam_low")
    t_back = time.time()
    rig.wait_commands(2, t_back)  # recovers without a restart
    wait_for(lambda: rig.status(t_back + 0.3).run_state == PolicyStatus.RUN_RUNNING, 5.0, "RUN_RUNNING again")


def test_a_stale_camera_holds_on_time_while_a_model_call_runs(rig: FaultRig) -> None:
    rig.wait_commands(1, time.time())
    (rig.faults / "hang").write_text("0.45")  # under max_inference_s (0.75 s): not a hang fault
    wait_for(lambda: not (rig.faults / "hang").exists(), 5.0, "the plugin to take the slow call")
    rig.robot.paused_inputs.add("cam_high")
    t_pause = time.time()
    last = max(s for s in rig.robot.sent_images["cam_high"] if s <= t_pause)
    try:
        t_hold = rig.wait_hold(last, "cam_high went silent during a model call")
        limit = rig.hold_limit(rig.config.ros.safety.max_image_age_s)
        assert t_hold - last <= limit, f"hold {t_hold - last:.3f} s after the last frame"
        assert t_hold < t_pause + 0.45, "the hold came before the model call ended"
        faulted_on(rig, t_pause, "stale input")
    finally:
        rig.robot.paused_inputs.discard("cam_high")
    rig.wait_commands(2, time.time())


def test_one_arm_stops_publishing_joint_states(rig: FaultRig) -> None:
    rig.wait_commands(1, time.time())
    rig.robot.paused_inputs.add(LEFT)
    last_stamp = rig.robot.sent_states[LEFT][-1][0]
    t_pause = time.time()
    try:
        last_stamp = max(last_stamp, rig.robot.sent_states[LEFT][-1][0])  # one may have been in flight
        t_hold = rig.wait_hold(last_stamp, "the left arm's joint states stopped")
        late = t_hold - last_stamp
        assert late <= rig.hold_limit(rig.config.ros.safety.max_state_age_s), f"hold {late:.3f} s late"
        wait_for(
            lambda: len({topic for _, topic, _ in rig.holds(last_stamp)}) == 2,
            1.0,
            "a hold on both arms, not only the silent one",
        )
        faulted_on(rig, t_pause, LEFT)
        time.sleep(0.5)
        assert not rig.commands(t_hold + 0.05)
    finally:
        rig.robot.paused_inputs.discard(LEFT)
    rig.wait_commands(2, time.time())


def test_a_model_call_that_hangs_for_5_s_holds_and_recovers(rig: FaultRig) -> None:
    rig.wait_commands(1, time.time())
    limit = 0.75 * rig.config.embodiment.horizon * rig.config.embodiment.dt  # the default max_inference_s
    (rig.faults / "hang").write_text("5.0")
    t0 = time.time()
    wait_for(lambda: not (rig.faults / "hang").exists(), 5.0, "the plugin to take the hang")
    t_start = time.time()  # the hanging call began at most this late (and after t0)
    t_hold = rig.wait_hold(t0, "the model call hung")
    assert limit - 0.1 <= t_hold - t0 and t_hold - t_start <= limit + 0.15, (t_hold - t0, t_hold - t_start)
    faulted_on(rig, t0, "inference hung")
    time.sleep(1.0)
    assert not rig.commands(t_hold + 0.05), "nothing is sent while the call hangs"
    rig.wait_commands(2, t0 + 5.0, timeout=15.0)  # the call returned (its chunk dropped); fresh chunks
    hung = [c for _, c in rig.robot.snapshot().chunks if c.inference_latency >= 4.0]
    assert not hung, "the hung call's chunk was dropped when it finally returned, not published"


def test_instruction_changed_mid_chunk(rig: FaultRig) -> None:
    rig.wait_commands(1, time.time())
    (rig.faults / "hang").write_text("0.3")  # a slow call (under max_inference_s) is in flight...
    wait_for(lambda: not (rig.faults / "hang").exists(), 5.0, "the plugin to take the slow call")
    client = rig.peer.node.create_client(SetInstruction, "/qvla/set_instruction")
    reply = rig.peer.call(client, SetInstruction.Request(instruction="put the cube down", reset=False))
    t_reply = time.time()
    assert reply.success, reply.message
    rig.wait_commands(3, t_reply)
    chunks = [c for t, c in rig.robot.snapshot().chunks if t > t_reply + 0.05]
    assert chunks and all(c.instruction == "put the cube down" for c in chunks), [
        c.instruction for c in chunks
    ]
    slow = [c for t, c in rig.robot.snapshot().chunks if c.inference_latency >= 0.29]
    assert not slow, "the chunk computed for the old instruction was dropped, not sent"
    assert rig.status(t_reply).run_state == PolicyStatus.RUN_RUNNING


def test_sim_reset_in_the_middle_of_a_chunk_never_commands_a_jump(rig: FaultRig) -> None:
    """The arms are teleported (a sim reset the node is not told about) while a chunk is executing:
    nothing sent once the joint states of the new pose have reached the node starts far from it (a
    chunk sent before they arrive cannot know; DDS and a loaded machine get ``delivery_s`` for that,
    while the controllers restart and execute nothing). Without the off-plan check the node went on
    splicing the old plan: the arms were pulled back 0.5-0.6 rad at max velocity."""
    delivery_s = 0.25
    rig.wait_commands(2, time.time())
    tolerance = rig.config.ros.safety.continuity_tolerance
    home = {topic: list(c.target(time.time())) for topic, c in rig.robot.controllers.items()}
    moved = {topic: [q + 0.6 if i == 0 else q for i, q in enumerate(v)] for topic, v in home.items()}
    t_reset = time.time()
    rig.robot.teleport(moved, restart_s=delivery_s)  # the controllers restart with the sim
    rig.wait_commands(4, t_reset + 0.6, timeout=20.0)  # it goes on from the new pose

    def first_seen() -> float | None:
        """Stamp of the first joint state sent from the new pose (both arms)."""
        seen = [
            next(
                (t for t, q in rig.robot.sent_states[src] if t >= t_reset and abs(q[0] - moved_q) < 0.05),
                None,
            )
            for src, moved_q in ((LEFT, moved[LEFT_CTRL][0]), (RIGHT, moved[RIGHT_CTRL][0]))
        ]
        return None if None in seen else max(s for s in seen if s is not None)

    t_seen = wait_for(first_seen, 5.0, "joint states from the new pose")
    checked = 0
    for t, topic, msg in rig.commands(t_seen + delivery_s):
        first = np.array(msg.points[0].positions[:6])
        drift = 0.1 * (t - t_reset) + 0.05  # the plugin moves the waist at most 0.1 rad/s
        assert np.abs(first - np.array(moved[topic][:6])).max() <= tolerance + drift, (
            f"{topic}: a command starting {first} after the arms were reset to {moved[topic][:6]}"
        )
        checked += 1
    assert checked >= 4
    faulted_on(rig, t_reset, "from the plan", recovers_fast=True)
    assert rig.node.alive()


def test_a_controller_nobody_listens_to_is_reported(rig: FaultRig) -> None:
    topic = next(o.topic for o in rig.config.ros.outputs if "left" in o.topic)
    rig.robot.unsubscribe_controller(topic)
    t0 = time.time()
    try:
        warn = wait_for(
            lambda: [d for d in rig.diag_since(t0) if d.level == b"\x01" and topic in d.message],
            5.0,
            f"a WARN diagnostic naming {topic}",
        )
        assert "is the controller running?" in warn[-1].message
        assert any(kv.key == "outputs_without_subscriber" and kv.value == topic for kv in warn[-1].values)
    finally:
        rig.robot.subscribe_controller(topic)
    t1 = time.time() + 0.5
    wait_for(
        lambda: (d := rig.diag_since(t1)) and all(topic not in x.message for x in d),
        5.0,
        "the warning to clear",
    )
