"""PolicyEngine behaviour without ROS: what is commanded, when, and what never is."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qvla_core.embodiment import Embodiment
from qvla_core.errors import ObservationError
from qvla_core.policy import ActionChunk, Observation
from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_core.runtime.engine import PolicyEngine, RunState

ALOHA = Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml"
JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]


class ScriptedPolicy:
    """Returns a chunk that ramps from the measured state; can be told to fail or return NaN."""

    def __init__(self, embodiment: Embodiment) -> None:
        self._embodiment = embodiment
        self.calls: list[Observation] = []
        self.fail: Exception | None = None
        self.nan = False
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    def reset(self) -> None:
        pass

    def infer(self, observation: Observation) -> ActionChunk:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            self.calls.append(observation)
            if self.fail is not None:
                raise self.fail
            emb = self._embodiment
            steps = np.arange(emb.horizon, dtype=np.float32)[:, None] * 0.001
            actions = np.asarray(observation.state, dtype=np.float32)[None, :] + steps
            if self.nan:
                actions[3, 2] = np.nan
            return ActionChunk(actions, emb.action_names, emb.dt, observation.stamp, {"total": self.delay_s})
        finally:
            with self._lock:
                self.in_flight -= 1


class RecordingSink:
    def __init__(self) -> None:
        self.trajectories: list[tuple[float, np.ndarray, float]] = []
        self.holds: list[np.ndarray] = []
        self.chunks: list[tuple[ActionChunk, float, str]] = []
        self.logs: list[tuple[str, str]] = []

    def send_trajectory(self, start: float, positions: np.ndarray, dt: float) -> None:
        self.trajectories.append((start, positions.copy(), dt))

    def send_hold(self, positions: np.ndarray) -> None:
        self.holds.append(positions.copy())

    def send_waypoints(self, waypoints: np.ndarray, stamp: float) -> None:
        raise AssertionError("aloha has no waypoint output")

    def cancel_navigation(self) -> None:
        raise AssertionError("aloha has no navigation")

    def publish_chunk(self, chunk: ActionChunk, first_due: float, instruction: str) -> None:
        self.chunks.append((chunk, first_due, instruction))

    def log(self, level: str, text: str) -> None:
        self.logs.append((level, text))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def config() -> RobotConfig:
    return load_robot_config(ALOHA)


@pytest.fixture
def rig(config: RobotConfig) -> Iterator[tuple[PolicyEngine, ScriptedPolicy, RecordingSink, Clock]]:
    policy = ScriptedPolicy(config.embodiment)
    sink = RecordingSink()
    clock = Clock()
    engine = PolicyEngine(config, policy, clock, sink, decode=lambda img: img, max_instruction_length=100)
    yield engine, policy, sink, clock
    engine.shutdown()


def feed(engine: PolicyEngine, clock: Clock, stamp: float | None = None, **state: Any) -> None:
    stamp = clock.t if stamp is None else stamp
    image = np.zeros((480, 640, 3), np.uint8)
    for cam in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"):
        engine.on_camera(cam, stamp, image)
    for side in ("left", "right"):
        positions = np.array(state.get(side, [0.1, -0.2, 0.3, 0.0, 0.4, 0.0, 0.5]), dtype=np.float64)
        engine.on_joint_state(f"/follower_{side}/joint_states", JOINTS, positions, stamp)


def wait(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


def test_no_command_without_activation_or_instruction(rig: Any) -> None:
    engine, policy, sink, clock = rig
    feed(engine, clock)
    engine.set_instruction("pick up the cube", reset=True)
    time.sleep(0.1)
    assert not policy.calls and not sink.trajectories  # not active yet
    engine.set_instruction("x", reset=False)
    assert engine.snapshot().instruction == "x"


def test_chunk_is_commanded_once_with_stamp_and_instruction(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("  pick up the cube ", reset=True)
    feed(engine, clock)
    wait(lambda: sink.trajectories)
    time.sleep(0.05)  # the same observation must not be inferred twice
    assert len(policy.calls) == 1 and len(sink.trajectories) == 1
    start, positions, dt = sink.trajectories[0]
    obs = policy.calls[0]
    assert obs.instruction == "pick up the cube" and obs.stamp == clock.t
    assert dt == pytest.approx(0.02)
    assert start >= obs.stamp and positions.shape[1] == 14
    assert np.isfinite(positions).all()
    assert sink.chunks[0][2] == "pick up the cube"
    assert engine.snapshot().commands == 1


def test_freshest_observation_and_one_inference_in_flight(rig: Any) -> None:
    engine, policy, _sink, clock = rig
    policy.delay_s = 0.05
    engine.activate()
    engine.set_instruction("go", reset=True)
    for _ in range(10):
        clock.t += 0.02
        feed(engine, clock)
        time.sleep(0.01)
    wait(lambda: len(policy.calls) >= 2)
    clock.t += 0.02
    feed(engine, clock)
    wait(lambda: policy.calls[-1].stamp == clock.t)
    assert policy.max_in_flight == 1
    stamps = [c.stamp for c in policy.calls]
    assert stamps == sorted(stamps) and len(stamps) < 10  # skipped stale ones, never went back


def test_stale_input_holds_measured_position(rig: Any) -> None:
    engine, _policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    feed(engine, clock)
    wait(lambda: sink.trajectories)
    clock.t += 0.25  # > max_image_age_s 0.2
    engine.tick()
    snap = engine.snapshot()
    assert (
        snap.run_state == RunState.FAULT
        and "stale input" in snap.last_fault
        and "cam_high" in snap.last_fault
    )
    assert len(sink.holds) == 1
    np.testing.assert_allclose(sink.holds[0][:6], [0.1, -0.2, 0.3, 0.0, 0.4, 0.0])
    engine.tick()
    assert len(sink.holds) == 1, "hold is sent once, not every tick"
    n = len(sink.trajectories)
    time.sleep(0.05)
    assert len(sink.trajectories) == n, "no command from stale sensors"
    feed(engine, clock)  # sensors back: commands resume
    wait(lambda: len(sink.trajectories) > n)
    assert engine.snapshot().run_state == RunState.RUNNING


def test_model_exception_faults_holds_and_keeps_running(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    policy.fail = RuntimeError("CUDA out of memory")
    feed(engine, clock)
    wait(lambda: engine.snapshot().run_state == RunState.FAULT)
    assert "inference failed: RuntimeError: CUDA out of memory" in engine.snapshot().last_fault
    assert not sink.trajectories and len(sink.holds) == 1
    policy.fail = None
    clock.t += 0.02
    feed(engine, clock)
    wait(lambda: sink.trajectories)


def test_nan_chunk_is_never_sent(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    policy.nan = True
    feed(engine, clock)
    wait(lambda: engine.snapshot().run_state == RunState.FAULT)
    assert not sink.trajectories
    assert "safety" in engine.snapshot().last_fault


def test_discontinuous_first_point_is_rejected(rig: Any, config: RobotConfig) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    original = policy.infer

    def jump(obs: Observation) -> ActionChunk:
        chunk = original(obs)
        actions = chunk.actions.copy()
        actions[:, 1] += 1.0  # 1 rad away from the measured shoulder
        return ActionChunk(actions, chunk.channel_names, chunk.dt, chunk.observation_stamp, chunk.latency)

    policy.infer = jump  # type: ignore[method-assign]
    feed(engine, clock)
    wait(lambda: engine.snapshot().run_state == RunState.FAULT)
    assert not sink.trajectories and "left_shoulder" in engine.snapshot().last_fault


def test_pause_stop_resume(rig: Any) -> None:
    engine, _policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    feed(engine, clock)
    wait(lambda: sink.trajectories)
    engine.stop()
    assert engine.snapshot().run_state == RunState.STOPPED and len(sink.holds) == 1
    n = len(sink.trajectories)
    clock.t += 0.02
    feed(engine, clock)
    time.sleep(0.05)
    assert len(sink.trajectories) == n, "stop latches"
    engine.set_instruction("another", reset=False)
    time.sleep(0.05)
    assert engine.snapshot().run_state == RunState.STOPPED, "a new instruction does not release stop"
    engine.resume()
    clock.t += 0.02
    feed(engine, clock)
    wait(lambda: len(sink.trajectories) > n)


def test_dry_run_publishes_chunks_but_never_commands(config: RobotConfig) -> None:
    policy, sink, clock = ScriptedPolicy(config.embodiment), RecordingSink(), Clock()
    engine = PolicyEngine(config, policy, clock, sink, decode=lambda img: img, dry_run=True)
    try:
        engine.activate()
        engine.set_instruction("go", reset=True)
        feed(engine, clock)
        wait(lambda: sink.chunks)
        clock.t += 1.0
        engine.tick()
        engine.stop()
        assert not sink.trajectories and not sink.holds
    finally:
        engine.shutdown()


@pytest.mark.parametrize(
    "text,fragment", [("", "empty"), ("   ", "empty"), ("x" * 101, "101"), ("a\x00b", "control")]
)
def test_bad_instructions_are_rejected_and_keep_the_old_one(rig: Any, text: str, fragment: str) -> None:
    engine, *_ = rig
    engine.set_instruction("keep me", reset=False)
    with pytest.raises(ObservationError, match=fragment):
        engine.set_instruction(text, reset=False)
    assert engine.snapshot().instruction == "keep me"


def test_bad_inputs_are_counted_and_never_used(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    nan = [0.1, float("nan"), 0.3, 0.0, 0.4, 0.0, 0.5]
    engine.on_joint_state("/follower_left/joint_states", JOINTS, np.array(nan), clock.t)
    engine.on_joint_state("/follower_left/joint_states", JOINTS[:-1], np.zeros(6), clock.t)  # missing gripper
    engine.on_camera("cam_high", clock.t + 5.0, np.zeros((480, 640, 3), np.uint8))  # from the future
    engine.on_camera("cam_low", clock.t, np.zeros((240, 320, 3), np.uint8))  # wrong size
    time.sleep(0.05)
    assert not policy.calls and not sink.trajectories
    rejected = engine.snapshot().rejections
    assert (
        rejected["/follower_left/joint_states"] == 2
        and rejected["cam_high"] == 1
        and rejected["cam_low"] == 1
    )
    assert any("cam_low" in text and "240" in text for _, text in sink.logs)
    assert any("non-finite" in text for _, text in sink.logs)


def test_a_joint_state_from_the_future_does_not_lock_out_good_ones(rig: Any) -> None:
    """A publisher on the wrong clock (wall time among sim time) is rejected without leaving a trace:
    later, correctly stamped joint states are still accepted and the robot is commanded."""
    engine, _policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    engine.on_joint_state("/follower_left/joint_states", JOINTS, np.zeros(7), clock.t + 1e9)
    assert engine.snapshot().rejections["/follower_left/joint_states"] == 1
    feed(engine, clock)
    wait(lambda: sink.trajectories)
    assert engine.snapshot().rejections["/follower_left/joint_states"] == 1


def test_warm_up_sizes_the_first_chunks_start_from_the_measured_position(rig: Any) -> None:
    """Without a measured delay the first RTC chunk would be anchored to the measured position for
    one row only; after the warm-up it is anchored for as long as inference really takes."""
    engine, policy, _sink, clock = rig
    policy.delay_s = 0.1
    assert engine.warm_up() == pytest.approx(0.1, abs=0.05)
    assert len(policy.calls) == 2 and policy.calls[0].state.shape == (14,)
    policy.calls.clear()
    policy.delay_s = 0.0
    engine.activate()
    engine.set_instruction("go", reset=True)
    feed(engine, clock)
    wait(lambda: policy.calls)
    prefix = policy.calls[0].action_prefix
    assert prefix is not None and prefix.shape[0] >= 0.1 / 0.02  # rows due within the 0.1 s budget


def test_warm_up_failure_is_logged_not_fatal(rig: Any) -> None:
    engine, policy, sink, _ = rig
    policy.fail = RuntimeError("blank images confuse me")
    assert engine.warm_up() is None
    assert any("warm-up" in text and "blank images" in text for _, text in sink.logs)


def test_a_chunk_that_loses_the_race_with_a_stop_never_follows_the_hold(rig: Any) -> None:
    """Stop arrives while a chunk is being checked, and the trajectory's publication is slow: the
    hold must still be the last thing the robot gets."""
    engine, _policy, sink, clock = rig
    events: list[str] = []
    real_check = engine._safety.check
    stopper: list[threading.Thread] = []

    def check_then_stop(*args: Any, **kwargs: Any) -> Any:
        if not stopper:  # first chunk: an operator presses stop right now
            operator = threading.Thread(target=engine.stop)
            operator.start()  # before the test thread can see (and join) it
            stopper.append(operator)
            time.sleep(0.02)  # stop() now waits for the engine's lock
        return real_check(*args, **kwargs)

    def slow_trajectory(start: float, positions: np.ndarray, dt: float) -> None:
        time.sleep(0.03)  # a busy publisher
        events.append("trajectory")

    engine._safety.check = check_then_stop
    sink.send_trajectory = slow_trajectory
    sink.send_hold = lambda positions: events.append("hold")
    engine.activate()
    engine.set_instruction("go", reset=True)
    feed(engine, clock)
    wait(lambda: stopper)
    stopper[0].join(timeout=2.0)
    time.sleep(0.1)
    assert "hold" in events and events[-1] == "hold", events


def test_rtc_first_chunk_is_inpainted_from_the_measured_position(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    feed(engine, clock, left=[0.2, -0.1, 0.3, 0.0, 0.4, 0.0, 0.5])
    wait(lambda: policy.calls)
    first = policy.calls[0]
    assert first.action_prefix is not None and first.prefix_weight is not None
    assert first.action_prefix.shape[0] >= 1 and np.all(first.prefix_weight == 1.0)
    gripper = (0.5 - -0.6213) / (1.4910 - -0.6213)  # raw gripper angle -> normalised opening
    np.testing.assert_allclose(
        first.action_prefix[0, :7], [0.2, -0.1, 0.3, 0.0, 0.4, 0.0, gripper], atol=1e-6
    )
    wait(lambda: sink.trajectories)
    clock.t += 0.02
    feed(engine, clock, left=[0.2, -0.1, 0.3, 0.0, 0.4, 0.0, 0.5])
    wait(lambda: len(policy.calls) >= 2)
    second = policy.calls[1]
    assert second.action_prefix is not None, "later chunks are inpainted from the committed plan"


def test_safety_clamps_and_rejections_are_counted_per_chunk_and_channel(rig: Any) -> None:
    engine, policy, sink, clock = rig
    engine.activate()
    engine.set_instruction("go", reset=True)
    original = policy.infer

    def fast_elbow(obs: Observation) -> ActionChunk:
        chunk = original(obs)
        actions = chunk.actions.copy()
        actions[10:, 9] += 0.8  # right elbow: 0.8 rad in one 20 ms step, far above 3.14 rad/s
        return ActionChunk(actions, chunk.channel_names, chunk.dt, chunk.observation_stamp, chunk.latency)

    policy.infer = fast_elbow  # type: ignore[method-assign]
    feed(engine, clock)
    wait(lambda: sink.trajectories)
    snap = engine.snapshot()
    assert snap.safety_velocity_clamped == 1 and snap.safety_limit_clamped == 0
    assert snap.safety_rejected == 0
    assert snap.clamped_channels == {"velocity:right_elbow": 1}
    kv = snap.key_values()
    assert kv["safety_velocity_clamped_chunks"] == "1" and kv["clamped_velocity_right_elbow"] == "1"

    def past_the_limit(obs: Observation) -> ActionChunk:
        chunk = original(obs)
        actions = chunk.actions.copy()
        # the right gripper opens past its 0..1 range, slower than its max_velocity (5/s)
        actions[25:, 13] = np.minimum(1.2, actions[24, 13] + 0.09 * np.arange(1, 26))
        return ActionChunk(actions, chunk.channel_names, chunk.dt, chunk.observation_stamp, chunk.latency)

    policy.infer = past_the_limit  # type: ignore[method-assign]
    clock.t += 0.1
    feed(engine, clock)
    wait(lambda: len(sink.trajectories) == 2)
    snap = engine.snapshot()
    assert (snap.safety_velocity_clamped, snap.safety_limit_clamped) == (1, 1)
    assert snap.clamped_channels == {"velocity:right_elbow": 1, "limit:right_gripper": 1}
    policy.infer = original  # type: ignore[method-assign]
    policy.nan = True
    clock.t += 0.1
    feed(engine, clock)
    wait(lambda: engine.snapshot().run_state == RunState.FAULT)
    snap = engine.snapshot()
    assert snap.safety_rejected == 1 and snap.key_values()["safety_rejected_chunks"] == "1"
