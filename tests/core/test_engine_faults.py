"""The engine's watchdog on a thread of its own, on a real clock: a stale input or a hung model call
holds the robot on time whatever the inference worker is doing, and faults are named by where they
happened (inference, output, input)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_core.runtime.engine import PolicyEngine, RunState
from tests.core.test_engine import ALOHA, JOINTS, RecordingSink, ScriptedPolicy, wait

IMAGE = np.zeros((480, 640, 3), np.uint8)
CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")


class Feeder:
    """Streams every input at a fixed rate on the real clock; ``paused`` inputs stop."""

    def __init__(self, engine: PolicyEngine, hz: float = 50.0) -> None:
        self.engine, self.period = engine, 1.0 / hz
        self.paused: set[str] = set()
        self.last_sent: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            now = time.monotonic()
            for cam in CAMERAS:
                if cam not in self.paused:
                    self.engine.on_camera(cam, now, IMAGE)
                    self.last_sent[cam] = now
            for side in ("left", "right"):
                topic = f"/follower_{side}/joint_states"
                if topic not in self.paused:
                    q = np.array([0.1, -0.2, 0.3, 0.0, 0.4, 0.0, 0.5])
                    self.engine.on_joint_state(topic, JOINTS, q, now)
                    self.last_sent[topic] = now

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


class TimedSink(RecordingSink):
    """Records when each hold arrives; can be told to fail sending commands."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_times: list[float] = []
        self.fail_send: Exception | None = None

    def send_hold(self, positions: np.ndarray) -> None:
        self.hold_times.append(time.monotonic())
        super().send_hold(positions)

    def send_trajectory(self, start: float, positions: np.ndarray, dt: float) -> None:
        if self.fail_send is not None:
            raise self.fail_send
        super().send_trajectory(start, positions, dt)


@pytest.fixture
def config() -> RobotConfig:
    return load_robot_config(ALOHA)


@pytest.fixture
def live(config: RobotConfig) -> Iterator[tuple[PolicyEngine, ScriptedPolicy, TimedSink, Feeder]]:
    policy = ScriptedPolicy(config.embodiment)
    sink = TimedSink()
    engine = PolicyEngine(config, policy, time.monotonic, sink, decode=lambda img: img, watch_period_s=0.02)
    feeder = Feeder(engine)
    engine.activate()
    engine.set_instruction("go", reset=True)
    try:
        yield engine, policy, sink, feeder
    finally:
        feeder.close()
        engine.shutdown()


def test_stale_camera_holds_on_time_while_an_inference_is_running(live: Any, config: RobotConfig) -> None:
    engine, policy, sink, feeder = live
    wait(lambda: sink.trajectories)
    policy.delay_s = 3.0  # the next inference runs far past the stale limit
    time.sleep(0.1)  # it has started
    assert policy.in_flight == 1
    feeder.paused.add("cam_high")
    time.sleep(0.03)
    last = feeder.last_sent["cam_high"]
    wait(lambda: sink.hold_times, timeout=2.0)
    limit = config.ros.safety.max_image_age_s
    # The watchdog thread wakes when the frame is due to go stale, not at the next control tick.
    assert sink.hold_times[0] - last <= limit + 0.03, sink.hold_times[0] - last
    assert policy.in_flight == 1, "the hold came while the model call was still running"
    snap = engine.snapshot()
    assert snap.run_state == RunState.FAULT and "cam_high" in snap.last_fault
    n = len(sink.trajectories)
    wait(lambda: policy.in_flight == 0, timeout=5.0)
    time.sleep(0.1)
    assert len(sink.trajectories) == n, "the chunk from before the stale frame was discarded"
    policy.delay_s = 0.0
    feeder.paused.clear()
    wait(lambda: len(sink.trajectories) > n)  # recovers without a restart
    assert engine.snapshot().run_state == RunState.RUNNING


def test_a_hung_model_call_holds_after_max_inference_s(live: Any, config: RobotConfig) -> None:
    engine, policy, sink, _feeder = live
    wait(lambda: sink.trajectories)
    limit = 0.75 * config.embodiment.horizon * config.embodiment.dt  # aloha.yaml leaves the default
    policy.delay_s = 2.0
    wait(lambda: policy.in_flight == 1)
    started = time.monotonic()
    wait(lambda: sink.hold_times, timeout=3.0)
    assert limit - 0.05 <= sink.hold_times[0] - started <= limit + 0.1, sink.hold_times[0] - started
    snap = engine.snapshot()
    assert snap.run_state == RunState.FAULT and snap.last_fault.startswith("inference hung"), snap.last_fault
    n = len(sink.trajectories)
    policy.delay_s = 0.0
    wait(lambda: len(sink.trajectories) > n, timeout=8.0)  # the hung call returned; fresh chunks flow
    assert engine.snapshot().run_state == RunState.RUNNING


def test_model_exception_is_an_inference_fault(live: Any) -> None:
    engine, policy, sink, _feeder = live
    wait(lambda: sink.trajectories)
    policy.fail = RuntimeError("CUDA error: an illegal memory access")
    wait(lambda: sink.hold_times)
    fault = engine.snapshot().last_fault
    assert fault == "inference failed: RuntimeError: CUDA error: an illegal memory access", fault
    policy.fail = None
    n = len(sink.trajectories)
    wait(lambda: len(sink.trajectories) > n)


def test_a_failing_output_is_an_output_fault_and_the_engine_recovers(live: Any) -> None:
    engine, _policy, sink, _feeder = live
    wait(lambda: sink.trajectories)
    sink.fail_send = OSError("controller topic gone")
    wait(lambda: sink.hold_times)
    fault = engine.snapshot().last_fault
    assert fault == "output failed: OSError: controller topic gone", fault
    sink.fail_send = None
    n = len(sink.trajectories)
    wait(lambda: len(sink.trajectories) > n)
    assert engine.snapshot().run_state == RunState.RUNNING


def test_a_failing_hold_does_not_kill_the_watchdog(live: Any) -> None:
    _engine, _policy, sink, feeder = live
    wait(lambda: sink.trajectories)

    def broken_hold(positions: np.ndarray) -> None:
        sink.hold_times.append(time.monotonic())
        raise OSError("publisher destroyed")

    sink.send_hold = broken_hold  # type: ignore[method-assign]
    feeder.paused.add("cam_low")
    wait(lambda: sink.hold_times)
    assert any("hold could not be sent" in text for _, text in sink.logs), sink.logs
    feeder.paused.clear()
    n = len(sink.trajectories)
    wait(lambda: len(sink.trajectories) > n)
    feeder.paused.add("cam_low")  # a second stale episode is still caught: the thread is alive
    wait(lambda: len(sink.hold_times) >= 2)


def test_no_chunk_is_sent_once_an_input_is_stale(config: RobotConfig) -> None:
    """Without the watchdog thread (tick never called): a chunk that finishes after an input went
    stale is discarded at delivery, so nothing computed around a stale input reaches the robot."""
    policy = ScriptedPolicy(config.embodiment)
    sink = TimedSink()
    engine = PolicyEngine(config, policy, time.monotonic, sink, decode=lambda img: img)
    feeder = Feeder(engine)
    try:
        engine.activate()
        engine.set_instruction("go", reset=True)
        wait(lambda: sink.trajectories)
        policy.delay_s = 0.5
        wait(lambda: policy.in_flight == 1)
        feeder.paused.add("/follower_left/joint_states")
        n = len(sink.trajectories)
        wait(lambda: policy.in_flight == 0, timeout=3.0)
        time.sleep(0.1)
        assert len(sink.trajectories) == n
    finally:
        feeder.close()
        engine.shutdown()


def test_clock_jumping_back_holds_forgets_the_old_timeline_and_recovers(config: RobotConfig) -> None:
    """A sim reset under use_sim_time (or a looped bag): stamps held from before the jump would look
    fresh for as long as the jump, and the committed plan lies on the old timeline."""
    from tests.core.test_engine import Clock, feed

    policy = ScriptedPolicy(config.embodiment)
    sink = TimedSink()
    clock = Clock()
    engine = PolicyEngine(config, policy, clock, sink, decode=lambda img: img)
    try:
        engine.activate()
        engine.set_instruction("go", reset=True)
        feed(engine, clock)
        wait(lambda: sink.trajectories)
        engine.tick()
        clock.t -= 30.0  # the sim restarted its clock
        engine.tick()
        snap = engine.snapshot()
        assert snap.run_state == RunState.FAULT
        assert snap.last_fault.startswith("clock jumped back by 30.000 s"), snap.last_fault
        assert len(sink.holds) == 1
        np.testing.assert_allclose(sink.holds[0][:6], [0.1, -0.2, 0.3, 0.0, 0.4, 0.0])  # the last measurement
        n = len(sink.trajectories)
        engine.tick()
        time.sleep(0.1)
        assert len(sink.trajectories) == n and len(sink.holds) == 1
        clock.t += 0.02
        feed(engine, clock)  # inputs stamped on the new clock
        wait(lambda: len(sink.trajectories) > n)
        start, _, _ = sink.trajectories[-1]
        assert clock.t - 1.0 < start < clock.t + 1.0, "the new plan is on the new timeline"
        assert engine.snapshot().run_state == RunState.RUNNING
    finally:
        engine.shutdown()


def test_usable_messages_are_counted_per_input(live: Any) -> None:
    """/diagnostics reports received_<input>: frames sent minus frames received is what was lost."""
    engine, _policy, sink, feeder = live
    wait(lambda: sink.trajectories)
    feeder.paused.add("cam_low")
    time.sleep(0.1)
    before = engine.snapshot().received
    time.sleep(0.3)
    after = engine.snapshot().key_values()
    assert int(after["received_cam_low"]) == before["cam_low"], "a silent camera gains nothing"
    assert int(after["received_cam_high"]) > before["cam_high"] + 5
    assert int(after["received_/follower_left/joint_states"]) > 0
