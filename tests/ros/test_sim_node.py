"""The installed ``sim_node`` (MuJoCo ALOHA) over real DDS: clock, joint states, cameras, JTC rules, reset,
and one TransferCube episode driven through ROS by the scripted expert.

One sim node (small images, real time) serves the whole module; each test starts with ``~/reset``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install gym-aloha==0.1.5")
pytest.importorskip(
    "gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed: pip install gym-aloha==0.1.5"
)

from rclpy.publisher import Publisher  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Int32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from qvla_core.policy import Observation  # noqa: E402
from qvla_core.robot_io import RobotConfig, load_robot_config  # noqa: E402
from qvla_core.runtime.joint_state import GripperScaling  # noqa: E402
from qvla_core.runtime.output_mapping import controller_mappings  # noqa: E402
from qvla_core.sim.aloha_env import START_ARM, START_FINGER, normalise_finger  # noqa: E402
from qvla_ros.io import conversions as conv  # noqa: E402
from tests.ros.harness import InstalledNode, RosPeer, wait_for  # noqa: E402

ROBOT = Path(__file__).resolve().parents[2] / "config/robots/aloha.yaml"
LEFT, RIGHT = "/follower_left/joint_states", "/follower_right/joint_states"
LEFT_CTRL = "/follower_left/arm_controller/joint_trajectory"
WIDTH, HEIGHT = 128, 96  # what the sim renders (the YAML's 640x480 is what the policy expects)
DT = 0.02


@dataclass
class Recorder:
    """Everything the sim published, keyed by stamp (sim seconds)."""

    clock: list[float] = field(default_factory=list)
    states: dict[str, list[tuple[float, list[str], np.ndarray]]] = field(default_factory=dict)
    images: dict[str, list[tuple[float, Image]]] = field(default_factory=dict)
    rewards: list[int] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        with self.lock:
            return self.clock[-1] if self.clock else 0.0

    def series(self, topic: str, after: float = -1.0, until: float = 1e18) -> list[tuple[float, np.ndarray]]:
        with self.lock:
            return [(t, q) for t, _, q in self.states[topic] if after < t <= until]

    def at(self, topic: str, stamp: float) -> np.ndarray:
        """The joint state with the first stamp >= ``stamp`` (waits for it)."""

        def find() -> tuple[np.ndarray] | None:
            with self.lock:
                for t, _, q in self.states[topic]:
                    if t >= stamp - 1e-6:
                        return (q,)
            return None

        return wait_for(find, 15.0, f"{topic} at sim time {stamp:.2f}")[0]


class SimPeer:
    def __init__(self, peer: RosPeer, config: RobotConfig) -> None:
        self.peer, self.config = peer, config
        self.rec = Recorder()
        node = peer.node
        qos = QoSProfile(depth=200)
        node.create_subscription(Clock, "/clock", self._on_clock, qos)
        for src in config.ros.joint_states:
            self.rec.states[src.topic] = []
            node.create_subscription(JointState, src.topic, lambda m, t=src.topic: self._on_state(t, m), qos)
        for cam in config.ros.cameras:
            self.rec.images[cam.camera] = []
            node.create_subscription(Image, cam.topic, lambda m, c=cam.camera: self._on_image(c, m), qos)
        node.create_subscription(Int32, "/qvla_sim/reward", self._on_reward, qos)
        node.create_subscription(Bool, "/qvla_sim/success", self._on_success, qos)
        self.traj_pubs = {
            out.topic: node.create_publisher(JointTrajectory, out.topic, 10) for out in config.ros.outputs
        }
        self.reset_client = node.create_client(Trigger, "/qvla_sim/reset")

    def _on_clock(self, msg: Clock) -> None:
        with self.rec.lock:
            self.rec.clock.append(conv.to_sec(msg.clock))

    def _on_state(self, topic: str, msg: JointState) -> None:
        with self.rec.lock:
            self.rec.states[topic].append(
                (conv.to_sec(msg.header.stamp), list(msg.name), np.array(msg.position, dtype=np.float64))
            )

    def _on_image(self, camera: str, msg: Image) -> None:
        with self.rec.lock:
            self.rec.images[camera].append((conv.to_sec(msg.header.stamp), msg))

    def _on_reward(self, msg: Int32) -> None:
        with self.rec.lock:
            self.rec.rewards.append(int(msg.data))

    def _on_success(self, msg: Bool) -> None:
        with self.rec.lock:
            self.rec.success.append(bool(msg.data))

    def wait_sim(self, t: float) -> None:
        wait_for(lambda: self.rec.now() >= t, 20.0, f"sim time {t:.2f} s")

    def reset(self) -> float:
        """Start a new episode; returns the sim time after which states show it."""
        before = self.rec.now()
        response = self.peer.call(self.reset_client, Trigger.Request(), timeout=20.0)
        assert response.success, response.message
        self.wait_sim(before + 0.1)
        return self.rec.now()

    def handshake(self, node: InstalledNode) -> None:
        """Make sure the sim has matched each of our trajectory publishers (DDS discovery is per
        endpoint and asymmetric: our publisher seeing its subscription does not mean the subscription
        sees us yet). An empty trajectory is harmless (JTC: hold) and the sim logs it."""
        for topic, pub in self.traj_pubs.items():

            def confirmed(topic: str = topic, pub: Publisher = pub) -> bool:
                if f"{topic}: empty trajectory" in node.log():
                    return True
                if pub.get_subscription_count() > 0:
                    pub.publish(JointTrajectory())
                return False

            wait_for(confirmed, 30.0, f"sim_node to receive on {topic}", poll=0.2)

    def send(self, topic: str, stamp: float, points: list[tuple[float, np.ndarray]]) -> None:
        """Publish a JointTrajectory (stamp 0 = start on arrival) to one controller."""
        pub = self.traj_pubs[topic]
        wait_for(lambda: pub.get_subscription_count() > 0, 10.0, f"a subscriber on {topic}")
        out = next(o for o in self.config.ros.outputs if o.topic == topic)
        msg = JointTrajectory(joint_names=list(out.joint_names))
        msg.header.stamp = conv.to_time(stamp)
        msg.points = [
            JointTrajectoryPoint(positions=[float(x) for x in q], time_from_start=conv.to_duration(tfs))
            for tfs, q in points
        ]
        pub.publish(msg)


@pytest.fixture(scope="module")
def config() -> RobotConfig:
    return load_robot_config(ROBOT)


@pytest.fixture(scope="module")
def sim(config: RobotConfig) -> Iterator[tuple[SimPeer, InstalledNode]]:
    node = InstalledNode(
        "qvla_ros",
        "sim_node",
        parameters={
            "robot_config": str(ROBOT),
            "task": "transfer_cube",
            "seed": 3,
            "image_width": WIDTH,
            "image_height": HEIGHT,
            "camera_rate_hz": 25.0,
            "real_time_factor": 1.0,
        },
    )
    try:
        peer = RosPeer("qvla_sim_test_peer")
        try:
            probe = SimPeer(peer, config)
            try:
                wait_for(lambda: probe.rec.series(LEFT), 60.0, "the first joint state from sim_node")
            except TimeoutError:
                raise AssertionError(f"sim_node published nothing:\n{node.log()[-3000:]}") from None
            probe.handshake(node)
            yield probe, node
        finally:
            peer.close()
        code = node.stop()
        log = node.log_path.read_text(errors="replace")
        assert code == 0, f"sim_node exited with {code} on SIGINT:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-3000:]
    finally:
        node.close()


def start_pose_raw(config: RobotConfig, side: str) -> np.ndarray:
    grippers = GripperScaling(config.ros.gripper_raw_range)
    finger = grippers.to_hardware(f"{side}_gripper", normalise_finger(START_FINGER))
    return np.array([*START_ARM, finger])


def test_clock_joint_states_and_cameras(sim: tuple[SimPeer, InstalledNode], config: RobotConfig) -> None:
    probe, _ = sim
    start = probe.reset()
    probe.wait_sim(start + 1.2)  # and let the last step's states and images arrive
    rec = probe.rec
    with rec.lock:
        clock = [t for t in rec.clock if t > start]
        rewards, success = list(rec.rewards), list(rec.success)
    assert np.allclose(np.diff(clock), DT, atol=1e-6), "the clock steps 20 ms at a time"
    clock_set = {round(t, 6) for t in clock}
    grippers = GripperScaling(config.ros.gripper_raw_range)
    for src in config.ros.joint_states:
        side = src.channels[0].split("_")[0]
        with rec.lock:
            msgs = [(t, names, q) for t, names, q in rec.states[src.topic] if start < t <= start + 1.0]
        assert len(msgs) == 50, "50 joint states per sim second"
        assert np.allclose(np.diff([t for t, _, _ in msgs]), DT, atol=1e-6)
        assert all(names == list(src.joint_names) for _, names, _ in msgs)
        assert all(round(t, 6) in clock_set for t, _, _ in msgs), "joint states are stamped with /clock"
        q = msgs[-1][2]
        np.testing.assert_allclose(q, start_pose_raw(config, side), atol=0.03)
        # The gripper is in raw follower units, not the normalised 0..1 the sim uses inside.
        closed = config.ros.gripper_raw_range[f"{side}_gripper"][0]
        assert closed < q[6] < 0.0 and abs(grippers.to_normalised(f"{side}_gripper", q[6]) - 0.1) < 0.02
    for cam in config.ros.cameras:
        with rec.lock:
            frames = [(t, m) for t, m in rec.images[cam.camera] if start < t <= start + 1.0]
        assert 24 <= len(frames) <= 26, f"{cam.camera}: 25 Hz in sim time, got {len(frames)}"
        assert np.allclose(np.diff([t for t, _ in frames]), 0.04, atol=1e-6)
        for t, msg in frames[:3]:
            assert (msg.width, msg.height, msg.encoding, msg.step) == (WIDTH, HEIGHT, "rgb8", WIDTH * 3)
            assert msg.header.frame_id == cam.camera and round(t, 6) in clock_set
        image = conv.image_to_rgb(frames[-1][1])
        assert image.shape == (HEIGHT, WIDTH, 3) and image.std() > 5.0, "a rendered scene, not a blank"
    assert rewards and set(rewards) <= {0, 1, 2, 3, 4}
    assert success and not any(success[-50:]), "no success at the start of an episode"


def test_left_trajectory_moves_only_the_left_arm(sim: tuple[SimPeer, InstalledNode]) -> None:
    probe, node = sim
    start = probe.reset()
    left0, right0 = probe.rec.at(LEFT, start), probe.rec.at(RIGHT, start)
    delta = np.array([0.3, -0.2, -0.2, 0.3, 0.3, 0.3, 1.2])  # gripper: raw radians, towards open
    probe.send(LEFT_CTRL, 0.0, [(0.6, left0 + delta)])
    probe.wait_sim(start + 1.4)
    left1 = probe.rec.at(LEFT, start + 1.4)
    moved = (left1 - left0) * np.sign(delta)
    assert np.all(moved > 0.6 * np.abs(delta)), (left1 - left0, delta, node.log()[-2000:])
    right_series = probe.rec.series(RIGHT, after=start, until=start + 1.4)
    drift = max(float(np.max(np.abs(q - right0))) for _, q in right_series)
    assert drift < 0.01, f"the right arm moved by {drift:.4f} rad"


def test_jtc_rules_over_ros(sim: tuple[SimPeer, InstalledNode]) -> None:
    """Future start, replacement from the new start, hold at the end, wholly-past rejection."""
    probe, node = sim
    start = probe.reset()
    base = probe.rec.at(LEFT, start)

    def waist(q: float) -> np.ndarray:
        goal = base.copy()
        goal[0] = q
        return goal

    # 1. A future stamp: nothing moves before it; the point is reached after it.
    t_start = probe.rec.now() + 0.8
    probe.send(LEFT_CTRL, t_start, [(0.4, waist(0.4))])
    probe.wait_sim(t_start + 0.8)
    before = probe.rec.series(LEFT, after=start, until=t_start + 1e-6)
    assert before[-1][0] == pytest.approx(t_start, abs=1e-6)
    assert max(abs(q[0] - base[0]) for _, q in before) < 0.005, "moved before the trajectory's start"
    assert probe.rec.at(LEFT, t_start + 0.1)[0] > base[0] + 0.02, "did not start at its time"
    assert probe.rec.at(LEFT, t_start + 0.8)[0] == pytest.approx(0.4, abs=0.02)

    # 2. A slow trajectory A (0.4 -> -0.4 over 2 s) replaced 1 s in by B (-> 0.2 in 0.5 s):
    #    A runs until B's start, then B takes over from where A had got to.
    t_a = probe.rec.now() + 0.2
    probe.send(LEFT_CTRL, t_a, [(2.0, waist(-0.4))])
    probe.wait_sim(t_a + 0.3)
    t_b = t_a + 1.0
    probe.send(LEFT_CTRL, t_b, [(0.5, waist(0.2))])
    probe.wait_sim(t_b + 1.5)
    assert probe.rec.at(LEFT, t_a + 0.5)[0] == pytest.approx(0.2, abs=0.06), "A runs before B starts"
    assert probe.rec.at(LEFT, t_b)[0] == pytest.approx(0.0, abs=0.06), "A runs until B's start"
    after_b = probe.rec.series(LEFT, after=t_b, until=t_b + 1.5)
    assert min(q[0] for _, q in after_b) > -0.1, "A went on after B's start"

    # 3. Hold at the end of B.
    held = [q[0] for t, q in after_b if t >= t_b + 0.8]
    assert len(held) >= 30 and max(abs(w - 0.2) for w in held) < 0.01

    # 4. A trajectory that ended in the past is rejected: nothing moves, the log says why.
    now = probe.rec.now()
    probe.send(LEFT_CTRL, now - 2.0, [(0.1, waist(-0.5)), (0.2, waist(-0.6))])
    probe.wait_sim(now + 0.6)
    late = probe.rec.series(LEFT, after=now, until=now + 0.6)
    assert max(abs(q[0] - 0.2) for _, q in late) < 0.01
    wait_for(lambda: "ends in the past" in node.log(), 5.0, "the rejection in the sim's log")
    assert "trajectory rejected" in node.log()


def test_reset_restores_the_start_pose(sim: tuple[SimPeer, InstalledNode], config: RobotConfig) -> None:
    probe, _ = sim
    start = probe.reset()
    left0 = probe.rec.at(LEFT, start)
    goal = left0 + np.array([0.5, -0.3, -0.3, 0.5, 0.5, 0.5, 1.0])
    probe.send(LEFT_CTRL, 0.0, [(0.5, goal), (3.0, goal + 0.2)])  # still running at the reset
    probe.wait_sim(start + 0.8)
    assert np.max(np.abs(probe.rec.at(LEFT, start + 0.8) - left0)) > 0.3
    clock_before = probe.rec.now()
    after = probe.reset()
    assert after > clock_before, "the sim clock never goes back"
    probe.wait_sim(after + 1.0)
    for topic, side in ((LEFT, "left"), (RIGHT, "right")):
        for _, q in probe.rec.series(topic, after=after, until=after + 1.0):
            np.testing.assert_allclose(q, start_pose_raw(config, side), atol=0.03)


def test_expert_transfers_the_cube_through_ros(
    sim: tuple[SimPeer, InstalledNode], config: RobotConfig
) -> None:
    """The scripted expert sees only ROS images + joint states and commands both controllers."""
    from qvla_core.runtime.joint_state import JointStateMerger
    from qvla_core.sim.expert import TransferCubeExpert

    probe, _ = sim
    expert = TransferCubeExpert(config.embodiment)
    mappings = controller_mappings(config)
    merger = JointStateMerger(config)
    start = probe.reset()
    rec = probe.rec
    next_plan = start
    while True:
        probe.wait_sim(next_plan)
        with rec.lock:
            t_img, msg = rec.images["cam_high"][-1]
            for topic, series in rec.states.items():
                t, names, q = next((s for s in reversed(series) if s[0] <= t_img + 1e-6), series[-1])
                merger.update(topic, names, q, t)
            success = any(rec.success[-50:])
        if success or t_img > start + 7.0:
            break
        state, _ = merger.state(t_img, max_age_s=float("inf"))
        chunk = expert.infer(
            Observation(
                images={"cam_high": conv.image_to_rgb(msg)[None]},
                state=state,
                instruction="transfer the cube",
                stamp=t_img,
            )
        )
        for m in mappings:
            probe.send(
                m.topic,
                t_img,
                [(DT * (k + 1), row) for k, row in enumerate(m.to_hardware(chunk.actions))],
            )
        next_plan = t_img + 0.2
    with rec.lock:
        rewards = list(rec.rewards)
    assert success, f"no success within 7 s of sim time; rewards {rewards[-300::10]}"
