"""Every Nav2 output type end to end over real DDS: the installed policy node, started as
vln_nav.launch.py starts it, with a robot YAML like config/robots/vln_nav.yaml whose outputs are the
types under test, a fake robot streaming the camera, and on the other side what Nav2 offers: real
rclpy action servers of the nav2_msgs actions (tests/ros/fake_nav2.py) and subscribers of goal_pose
and the path.

Checked: each plan arrives as waypoints in base_link stamped at its observation (a camera frame's
stamp), equal to the chunk computed from that observation; a new plan pre-empts the previous goal
(never a cancel between two plans); a hold (/qvla/stop, a stale camera) cancels the running goal, or
sends a stop on the topics; a missing action server is reported in /qvla/status and /diagnostics as
an output fault, the node stays up and starts sending once the server appears."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
nav2 = pytest.importorskip("nav2_msgs.action", reason="nav2_msgs not built: run scripts/setup.sh")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from qvla_msgs.msg import PolicyStatus  # noqa: E402
from tests.ros.fake_nav2 import FakeNav2, ServedGoal  # noqa: E402
from tests.ros.fake_robot import to_sec  # noqa: E402
from tests.ros.harness import REPO, wait_for  # noqa: E402
from tests.ros.node_rig import NodeRig, spec_for  # noqa: E402

ACTIONS = {
    "/navigate_through_poses": ("navigate_through_poses", nav2.NavigateThroughPoses),
    "/follow_path": ("follow_path", nav2.FollowPath),
    "/navigate_to_pose": ("navigate_to_pose", nav2.NavigateToPose),
}
TOPICS = {"/goal_pose": "goal_pose", "/qvla/waypoints": "path"}
CAMERA = "front_camera"


def robot_yaml(tmp: Path, outputs: list[dict[str, str]]) -> Path:
    """config/robots/vln_nav.yaml with other outputs (same embodiment: the tiny checkpoint fits)."""
    data = yaml.safe_load((REPO / "config" / "robots" / "vln_nav.yaml").read_text(encoding="utf-8"))
    data["ros"]["outputs"] = outputs
    data["ros"]["chunking"]["inference_period_s"] = 0.5  # two plans a second: shorter tests
    path = tmp / "vln_nav_test.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def waypoints_of(kind: str, msg: Any) -> tuple[Any, list[Any]]:
    """(header, poses) of what an output carries."""
    if kind == "navigate_through_poses":
        return msg.poses.header, list(msg.poses.goals)  # Kilted: nav_msgs/Goals
    if kind in ("follow_path", "path"):
        msg = msg.path if kind == "follow_path" else msg
        return msg.header, list(msg.poses)
    pose = msg.pose if kind == "navigate_to_pose" else msg
    return pose.header, [pose]


class Rig:
    def __init__(self, tmp: Path, checkpoint: Path, config_dir: Path, outputs: list[dict[str, str]]) -> None:
        spec = spec_for(robot_yaml(tmp, outputs), checkpoint, config_dir, instruction="go to the door")
        self.node_rig = NodeRig(spec, "fake_vln_nav")
        self.robot, self.peer, self.node = self.node_rig.robot, self.node_rig.peer, self.node_rig.node
        self.diagnostics: list[DiagnosticStatus] = []
        self.peer.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.nav2: FakeNav2 | None = None
        self.closed = False

    def _on_diag(self, msg: DiagnosticArray) -> None:
        self.diagnostics += [s for s in msg.status if s.name == "qvla: policy"]

    def start_nav2(self) -> FakeNav2:
        if self.nav2 is None:
            self.nav2 = FakeNav2({name: action for name, (_, action) in ACTIONS.items()})
        return self.nav2

    def trigger(self, name: str) -> None:
        reply = self.peer.call(self.peer.node.create_client(Trigger, name), Trigger.Request())
        assert reply.success, reply.message

    def status(self, what: str, predicate: Any, timeout: float = 20.0) -> PolicyStatus:
        return self.node_rig.wait_status(what, predicate, timeout)

    def log(self) -> str:
        return self.node.log()[-3000:]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.node_rig.close()  # first: the node's hold at exit still reaches Nav2
        if self.nav2 is not None:
            self.nav2.close()
            self.nav2 = None

    def check_plan(self, kind: str, msg: Any) -> None:
        """Waypoints in base_link at a camera frame's stamp, equal to the chunk of that observation
        (clamped into the embodiment's limits); goal_pose and navigate_to_pose: its last waypoint."""
        header, poses = waypoints_of(kind, msg)
        emb = self.node_rig.config.embodiment
        assert header.frame_id == "base_link", f"{kind}: frame {header.frame_id!r}"
        stamp = to_sec(header.stamp)
        sent = np.array(self.robot.sent_images[CAMERA])
        assert np.min(np.abs(sent - stamp)) < 1e-6, f"{kind}: stamp {stamp:.6f} is no camera frame's stamp"

        def chunk_of_stamp() -> Any:
            return next(
                (c for _, c in self.robot.snapshot().chunks if to_sec(c.observation_stamp) == stamp), None
            )

        chunk = wait_for(chunk_of_stamp, 5.0, f"the ActionChunk of the {kind} plan at {stamp:.6f}")
        rows = np.array(chunk.actions, dtype=np.float64).reshape(chunk.shape[0], chunk.shape[1])
        lower = np.array([c.lower for c in emb.action])
        upper = np.array([c.upper for c in emb.action])
        rows = np.clip(rows, lower, upper)
        rows = rows[-1:] if kind in ("goal_pose", "navigate_to_pose") else rows
        assert len(poses) == len(rows), f"{kind}: {len(poses)} waypoints, want {len(rows)}"
        for k, (pose, (x, y, yaw)) in enumerate(zip(poses, rows, strict=True)):
            assert pose.header == header, f"{kind} waypoint {k}: header {pose.header}"
            p, q = pose.pose.position, pose.pose.orientation
            assert (p.x, p.y, p.z) == pytest.approx((x, y, 0.0), abs=1e-5), f"{kind} waypoint {k}"
            assert 2.0 * math.atan2(q.z, q.w) == pytest.approx(yaw, abs=1e-5), f"{kind} waypoint {k}"


def wait_goals(nav2: FakeNav2, n: int, since: float, rig: Rig, timeout: float = 30.0) -> None:
    def enough() -> bool:
        return all(len(nav2.received(name, since)) >= n for name in ACTIONS)

    wait_for(enough, timeout, f"{n} goals at each of {list(ACTIONS)}\n{rig.log()}")


def settled(nav2: FakeNav2, name: str) -> list[ServedGoal]:
    """The goals of one action once every pre-empted one has ended (the newest runs)."""

    def done() -> list[ServedGoal] | None:
        goals = nav2.received(name)
        return goals if all(g.outcome for g in goals[:-1]) else None

    return wait_for(done, 5.0, f"the pre-empted goals of {name} to end")


def wait_all_ended(nav2: FakeNav2, why: str) -> None:
    wait_for(lambda: not nav2.running_any(), 5.0, f"every goal to end after {why}")


# ===================================================================== the three Nav2 actions
@pytest.fixture(scope="class")
def actions_rig(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, config_dir: Path
) -> Iterator[Rig]:
    outputs = [{"type": kind, "topic": name} for name, (kind, _) in ACTIONS.items()]
    rig = Rig(tmp_path_factory.mktemp("nav_actions"), tiny_checkpoint, config_dir, outputs)
    try:
        yield rig
    finally:
        rig.close()


class TestNav2Actions:
    def test_a_missing_server_is_an_output_fault_and_sending_starts_when_it_appears(
        self, actions_rig: Rig
    ) -> None:
        rig = actions_rig
        if rig.nav2 is None:  # the first test of the class: nothing serves the actions yet
            status = rig.status(
                "a fault naming the missing servers", lambda s: "no action server" in s.last_fault, 60.0
            )
            assert status.run_state == PolicyStatus.RUN_FAULT
            for name in ACTIONS:
                assert name in status.last_fault, status.last_fault
            fault_diag = wait_for(
                lambda: next((d for d in reversed(rig.diagnostics) if "no action server" in d.message), None),
                5.0,
                "/diagnostics naming the missing servers",
            )
            assert fault_diag.level == DiagnosticStatus.ERROR, fault_diag
            assert status.commands_sent == 0 and rig.node.alive()
            fault = status.last_fault
        else:
            fault = ""
        since = time.time()
        nav2 = rig.start_nav2()
        wait_goals(nav2, 2, since, rig)
        rig.status("running once the servers are there", lambda s: s.run_state == PolicyStatus.RUN_RUNNING)
        assert rig.node.alive()
        # An output fault, told as one: the policy itself worked.
        assert "inference failed" not in fault, fault

    def test_each_plan_arrives_in_base_link_at_its_observation_stamp(self, actions_rig: Rig) -> None:
        since = time.time()
        nav2 = actions_rig.start_nav2()
        wait_goals(nav2, 3, since, actions_rig)
        for name, (kind, _) in ACTIONS.items():
            for served in nav2.received(name, since):
                actions_rig.check_plan(kind, served.goal)

    def test_a_new_plan_preempts_the_previous_goal(self, actions_rig: Rig) -> None:
        since = time.time()
        nav2 = actions_rig.start_nav2()
        wait_goals(nav2, 3, since, actions_rig)
        for name in ACTIONS:
            goals = settled(nav2, name)
            stamps = [to_sec(waypoints_of(ACTIONS[name][0], g.goal)[0].stamp) for g in goals]
            assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), f"{name}: {stamps}"
            # Nav2 aborts a pre-empted goal; the policy never cancels between plans (that stops the robot).
            assert {g.outcome for g in goals[:-1]} == {"preempted"}, [g.outcome for g in goals]
            assert not any(g.cancel_requested_at for g in goals), (
                f"{name}: a goal was cancelled between plans"
            )
            assert [g for g in goals if not g.outcome] == goals[-1:], f"{name}: more than one goal running"

    def test_stop_cancels_the_running_goal_and_resume_sends_again(self, actions_rig: Rig) -> None:
        rig, nav2 = actions_rig, actions_rig.start_nav2()
        wait_goals(nav2, 1, time.time(), rig)
        running = {name: nav2.running(name) for name in ACTIONS}
        stopped_at = time.time()
        rig.trigger("/qvla/stop")
        wait_all_ended(nav2, "/qvla/stop")
        for name in ACTIONS:
            # What ran at the stop is cancelled (or was pre-empted by a plan sent just before it).
            assert all(g.outcome in ("canceled", "preempted") for g in running[name]), running[name]
            newest = nav2.received(name)[-1]
            assert newest.outcome == "canceled" and newest.cancel_requested_at >= stopped_at, newest
        time.sleep(2.0)  # four inference periods: nothing is sent while stopped
        assert not nav2.received(since=stopped_at + 0.2), "a goal was sent while stopped"
        assert rig.node_rig.robot.last_status().run_state == PolicyStatus.RUN_STOPPED
        since = time.time()
        rig.trigger("/qvla/resume")
        wait_goals(nav2, 1, since, rig)

    def test_a_stale_camera_cancels_the_running_goal(self, actions_rig: Rig) -> None:
        rig, nav2 = actions_rig, actions_rig.start_nav2()
        wait_goals(nav2, 1, time.time(), rig)
        rig.robot.paused_inputs.add(CAMERA)
        try:
            rig.status("a stale camera fault", lambda s: "stale input" in s.last_fault, 10.0)
            wait_all_ended(nav2, "the camera went stale")
            for name in ACTIONS:
                assert nav2.received(name)[-1].outcome == "canceled", name
        finally:
            rig.robot.paused_inputs.discard(CAMERA)
        since = time.time()
        wait_goals(nav2, 1, since, rig)  # the camera is back: plans again

    def test_a_rejected_goal_is_an_output_fault_and_holds(self, actions_rig: Rig) -> None:
        rig, nav2 = actions_rig, actions_rig.start_nav2()
        wait_goals(nav2, 1, time.time(), rig)
        nav2.reject = True  # as an inactive Nav2 (lifecycle not active) does
        try:
            status = rig.status(
                "a fault naming the rejected goal", lambda s: "rejected the goal" in s.last_fault
            )
            assert any(name in status.last_fault for name in ACTIONS), status.last_fault
            assert "inference failed" not in status.last_fault, status.last_fault
            wait_all_ended(nav2, "the goals were rejected")  # the hold cancelled what still ran
            assert all(nav2.received(name)[-1].outcome == "canceled" for name in ACTIONS)
        finally:
            nav2.reject = False
        wait_goals(nav2, 1, time.time(), rig)
        rig.status("running again", lambda s: s.run_state == PolicyStatus.RUN_RUNNING)

    def test_ctrl_c_cancels_the_running_goal(self, actions_rig: Rig) -> None:
        rig, nav2 = actions_rig, actions_rig.start_nav2()
        wait_goals(nav2, 1, time.time(), rig)
        rig.close()  # SIGINT, as launch sends it; the node must exit 0 without a traceback
        wait_all_ended(nav2, "the node exited")
        for name in ACTIONS:
            assert nav2.received(name)[-1].outcome == "canceled", f"{name}: {nav2.received(name)[-1]}"


# ===================================================================== goal_pose and path topics
@pytest.fixture(scope="class")
def topics_rig(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, config_dir: Path
) -> Iterator[Rig]:
    outputs = [{"type": kind, "topic": name} for name, kind in TOPICS.items()]
    rig = Rig(tmp_path_factory.mktemp("nav_topics"), tiny_checkpoint, config_dir, outputs)
    try:
        yield rig
    finally:
        rig.close()


def topic_messages(rig: Rig, since: float = 0.0) -> dict[str, list[tuple[float, Any]]]:
    got = rig.robot.snapshot()
    return {name: [(t, m) for t, m in (got.poses | got.paths)[name] if t >= since] for name in TOPICS}


def is_stop(kind: str, msg: Any) -> bool:
    """The hold on a topic: goal_pose at base_link's origin "now" (stamp 0), or an empty path."""
    header, poses = waypoints_of(kind, msg)
    if kind == "path":
        return not poses
    p, q = poses[0].pose.position, poses[0].pose.orientation
    return to_sec(header.stamp) == 0.0 and (p.x, p.y, p.z, q.x, q.y, q.z, q.w) == (0, 0, 0, 0, 0, 0, 1)


def wait_topic_plans(rig: Rig, n: int, since: float) -> dict[str, list[tuple[float, Any]]]:
    def enough() -> dict[str, list[tuple[float, Any]]] | None:
        got = topic_messages(rig, since)
        plans = {
            name: [(t, m) for t, m in msgs if not is_stop(TOPICS[name], m)] for name, msgs in got.items()
        }
        return plans if all(len(v) >= n for v in plans.values()) else None

    return wait_for(enough, 60.0, f"{n} plans on each of {list(TOPICS)}\n{rig.log()}")


class TestNavTopics:
    def test_each_plan_arrives_in_base_link_at_its_observation_stamp(self, topics_rig: Rig) -> None:
        plans = wait_topic_plans(topics_rig, 3, time.time())
        for name, msgs in plans.items():
            for _, msg in msgs:
                topics_rig.check_plan(TOPICS[name], msg)

    @pytest.mark.parametrize("hold", ["stop", "stale camera"])
    def test_a_hold_sends_a_stop_and_no_plan_follows(self, topics_rig: Rig, hold: str) -> None:
        rig = topics_rig
        wait_topic_plans(rig, 1, time.time())
        held_at = time.time()
        if hold == "stop":
            rig.trigger("/qvla/stop")
        else:
            rig.robot.paused_inputs.add(CAMERA)
        try:
            if hold == "stale camera":
                rig.status("a stale camera fault", lambda s: "stale input" in s.last_fault, 10.0)

            def stops() -> bool:
                got = topic_messages(rig, held_at)
                return all(any(is_stop(TOPICS[n], m) for _, m in got[n]) for n in TOPICS)

            wait_for(stops, 5.0, f"a stop on each of {list(TOPICS)} after {hold}\n{rig.log()}")
            time.sleep(1.5)
            last = {n: msgs[-1][1] for n, msgs in topic_messages(rig, held_at).items()}
            assert all(is_stop(TOPICS[n], m) for n, m in last.items()), f"a plan followed the stop ({hold})"
        finally:
            rig.robot.paused_inputs.discard(CAMERA)
        since = time.time()
        if hold == "stop":
            rig.trigger("/qvla/resume")
        wait_topic_plans(rig, 1, since)

    def test_ctrl_c_sends_a_stop(self, topics_rig: Rig) -> None:
        rig = topics_rig
        wait_topic_plans(rig, 1, time.time())
        stopped_at = time.time()
        assert rig.node.stop() == 0, rig.log()  # SIGINT, as launch sends it

        def stops() -> bool:
            got = topic_messages(rig, stopped_at)
            return all(got[n] and is_stop(TOPICS[n], got[n][-1][1]) for n in TOPICS)

        wait_for(stops, 5.0, f"a stop on each of {list(TOPICS)} as the node exits\n{rig.log()}")
