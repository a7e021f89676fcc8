"""Safety filter (reject, continuity, velocity, limits), hold command and watchdog."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.errors import ObservationError, SafetyError
from qvla_core.robot_io import SafetySettings
from qvla_core.runtime.safety import SafetyFilter, Watchdog, hold_command

ALOHA = Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml"
DT = 0.02


@pytest.fixture(scope="module")
def aloha() -> Embodiment:
    return load_embodiment(ALOHA)


@pytest.fixture(scope="module")
def filt(aloha: Embodiment) -> SafetyFilter:
    return SafetyFilter(aloha, SafetySettings(continuity_tolerance=0.3))


def mixed() -> Embodiment:
    """One joint with a state, one without, a delta channel, an unlimited one and a gripper."""
    ch = {"kind": "joint_position", "lower": -1.0, "upper": 1.0, "max_velocity": 1.0}
    return Embodiment.model_validate(
        {
            "name": "mixed",
            "body": "test body",
            "control_convention": "test",
            "control_rate_hz": 50.0,
            "horizon": 4,
            "state": [{"name": "a", **ch}, {"name": "grip", "kind": "gripper", "lower": 0.0, "upper": 1.0}],
            "action": [
                {"name": "a", **ch},
                {"name": "b", **ch},
                {"name": "d", "kind": "joint_delta", "lower": -0.5, "upper": 0.5, "max_velocity": 2.0},
                {"name": "free", "kind": "joint_position", "lower": -5.0, "upper": 5.0},
                {"name": "grip", "kind": "gripper", "lower": -0.5, "upper": 2.0, "max_velocity": 5.0},
            ],
            "cameras": [{"name": "cam", "width": 4, "height": 4}],
        }
    )


def test_a_good_command_passes_unchanged(aloha: Embodiment, filt: SafetyFilter) -> None:
    state = np.zeros(14)
    cmd = np.tile(np.linspace(0.0, 0.05, 10)[:, None], (1, 14))  # 0.0056 rad per step < 3.14 * 0.02
    out = filt.check(cmd, state, DT)
    np.testing.assert_array_equal(out.positions, cmd)
    assert out.clamped == () and out.positions.dtype == np.float64


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_commands_are_rejected(filt: SafetyFilter, bad: float) -> None:
    cmd = np.zeros((5, 14))
    cmd[3, 9] = bad
    with pytest.raises(SafetyError, match=r"non-finite .*right_elbow at point 3"):
        filt.check(cmd, np.zeros(14), DT)


def test_shape_and_state_errors(filt: SafetyFilter) -> None:
    with pytest.raises(SafetyError, match="shape"):
        filt.check(np.zeros((5, 13)), None, DT)
    with pytest.raises(SafetyError, match="shape"):
        filt.check(np.zeros((0, 14)), None, DT)
    with pytest.raises(SafetyError, match="measured state shape"):
        filt.check(np.zeros((5, 14)), np.zeros(7), DT)
    with pytest.raises(SafetyError, match="measured state is not finite"):
        filt.check(np.zeros((5, 14)), np.full(14, np.nan), DT)
    with pytest.raises(SafetyError, match="dt"):
        filt.check(np.zeros((5, 14)), None, 0.0)


def test_continuity_names_channel_and_jump(filt: SafetyFilter) -> None:
    cmd = np.zeros((5, 14))
    cmd[0, 2] = 0.5
    with pytest.raises(SafetyError, match=r"jumps 0\.5000 from the measured left_elbow \(tolerance 0\.3\)"):
        filt.check(cmd, np.zeros(14), DT)
    filt.check(cmd, None, DT)  # without a measured state there is nothing to compare with


def test_velocity_is_limited_from_the_measured_state(filt: SafetyFilter) -> None:
    state = np.zeros(14)
    cmd = np.zeros((10, 14))
    cmd[:, 0] = 0.25  # within continuity, but 0.25 in one step > 3.14 * 0.02
    cmd[5:, 6] = 1.0  # gripper steps 0 -> 1 at once, limit 5.0 * 0.02 = 0.1 per step
    out = filt.check(cmd, state, DT)
    steps = np.diff(np.vstack([state, out.positions]), axis=0)
    assert np.abs(steps[:, 0]).max() <= 3.14 * DT + 1e-12
    np.testing.assert_allclose(out.positions[:, 0], np.minimum(np.arange(1, 11) * 3.14 * DT, 0.25))
    np.testing.assert_allclose(out.positions[5:, 6], [0.1, 0.2, 0.3, 0.4, 0.5])
    assert out.velocity_clamped == ("left_waist", "left_gripper") and out.limit_clamped == ()


def test_a_gripper_squeezing_an_object_keeps_its_grip(filt: SafetyFilter) -> None:
    """Measured opening 0.35 (fingers on the cube), command 0.0 (closed): neither a jump to reject nor
    a ramp from the measured opening (that would loosen the grip at every new chunk)."""
    state = np.zeros(14)
    state[13] = 0.35
    cmd = np.zeros((10, 14))
    out = filt.check(cmd, state, DT)
    np.testing.assert_array_equal(out.positions[:, 13], 0.0)
    assert out.clamped == ()
    cmd[:, 2] = 0.5  # an arm joint is still held to the measured state
    with pytest.raises(SafetyError, match="left_elbow"):
        filt.check(cmd, state, DT)


def test_first_step_budget_covers_the_gap_to_the_first_point(filt: SafetyFilter) -> None:
    # The robot moves at 1 rad/s; the new trajectory starts 0.1 s after the state was measured.
    state = np.zeros(14)
    cmd = np.tile((0.1 + np.arange(10) * DT)[:, None], (1, 14))
    cmd[:, 6] = cmd[:, 13] = 0.5  # grippers parked
    state[6] = state[13] = 0.5
    jerky = filt.check(cmd, state, DT)  # one dt budget: first point pulled back to 0.0628
    assert jerky.positions[0, 0] == pytest.approx(3.14 * DT)
    smooth = filt.check(cmd, state, DT, first_step_s=0.1)
    np.testing.assert_array_equal(smooth.positions, cmd)
    assert smooth.clamped == ()
    with pytest.raises(SafetyError, match="first_step_s"):
        filt.check(cmd, state, DT, first_step_s=math.nan)


def test_positions_are_clamped_to_limits(filt: SafetyFilter, aloha: Embodiment) -> None:
    state = np.zeros(14)
    state[1] = 1.2  # near left_shoulder's upper limit 1.25664
    cmd = np.tile(state, (20, 1))
    cmd[:, 1] = 1.4  # continuity ok (0.2) but over the limit
    out = filt.check(cmd, state, DT)
    assert out.positions[:, 1].max() == pytest.approx(aloha.action[1].upper)
    assert out.limit_clamped == ("left_shoulder",) and out.clamped == ("left_shoulder",)


def test_random_commands_always_come_out_safe(aloha: Embodiment, filt: SafetyFilter) -> None:
    rng = np.random.default_rng(1234)
    lower = np.array([c.lower for c in aloha.action])
    upper = np.array([c.upper for c in aloha.action])
    vmax = np.array([c.max_velocity or math.inf for c in aloha.action])
    for _ in range(500):
        n = int(rng.integers(1, 60))
        dt = float(rng.uniform(0.005, 0.1))
        state = rng.uniform(lower, upper)
        cmd = state + rng.normal(0.0, rng.choice([0.01, 0.1, 1.0, 10.0]), size=(n, 14)).cumsum(axis=0)
        cmd[0] = state + rng.uniform(-0.29, 0.29, size=14)  # passes the continuity check
        first = float(rng.choice([dt, 3 * dt]))
        out = filt.check(cmd, state, dt, first_step_s=first).positions
        assert out.shape == (n, 14) and np.isfinite(out).all()
        assert (out >= lower).all() and (out <= upper).all()
        steps = np.abs(np.diff(np.vstack([state, out]), axis=0))
        arm = np.array([c.kind != "gripper" for c in aloha.action])  # grippers: see the squeeze test
        assert (steps[0, arm] <= vmax[arm] * first + 1e-9).all() and (steps[1:] <= vmax * dt + 1e-9).all()


def test_mixed_channel_kinds() -> None:
    emb = mixed()
    f = SafetyFilter(emb, SafetySettings(continuity_tolerance=0.3))
    state = np.array([0.0, 0.5])
    cmd = np.array(
        [
            [0.0, 0.9, 0.3, 4.9, 0.5],  # b has no state: its first point is free (no continuity)
            [0.0, -0.9, -0.3, -4.9, 3.0],
        ]
    )
    out = f.check(cmd, state, DT)
    # b: velocity limit between points only; d: a delta, |d| <= 2 * 0.02; free: unlimited rate.
    np.testing.assert_allclose(out.positions[:, 1], [0.9, 0.88])
    np.testing.assert_allclose(out.positions[:, 2], [0.04, -0.04])
    np.testing.assert_allclose(out.positions[:, 3], [4.9, -4.9])
    # grip: limits widened in the YAML are still cut to 0..1, rate 0.1 per step from 0.5.
    np.testing.assert_allclose(out.positions[:, 4], [0.5, 0.6])
    assert set(out.velocity_clamped) == {"b", "d", "grip"}


def test_hold_command(aloha: Embodiment, filt: SafetyFilter) -> None:
    state = np.linspace(-0.5, 0.5, 14)
    state[6] = 1.03  # gripper reads slightly past open
    hold = filt.hold(state)
    assert hold.positions.shape == (1, 14)
    assert hold.positions[0, 6] == 1.0 and hold.limit_clamped == ("left_gripper",)
    np.testing.assert_array_equal(np.delete(hold.positions[0], 6), np.delete(state, 6))
    with pytest.raises(SafetyError, match=r"channels \['b', 'free'\] have no measured state"):
        hold_command(mixed(), np.array([0.0, 0.5]))
    with pytest.raises(SafetyError, match="cannot hold"):
        filt.hold(np.full(14, np.nan))


def test_watchdog_reports_stale_and_missing_inputs() -> None:
    dog = Watchdog({"joints": 0.1, "cam_high": 0.2})
    assert dog.stale(0.0) == {"joints": math.inf, "cam_high": math.inf}
    dog.feed("joints", 1.0)
    dog.feed("cam_high", 1.0)
    assert dog.stale(1.05) == {}
    stale = dog.stale(1.15)
    assert list(stale) == ["joints"] and stale["joints"] == pytest.approx(0.15)
    dog.feed("joints", 0.5)  # an older stamp does not roll the age back
    assert "joints" in dog.stale(1.15)
    with pytest.raises(ObservationError, match="unknown input"):
        dog.feed("lidar", 1.0)
    with pytest.raises(ValueError, match="must be > 0"):
        Watchdog({"x": 0.0})
    dog.reset()
    assert set(dog.stale(1.0)) == {"joints", "cam_high"}


def test_check_is_cheap(filt: SafetyFilter) -> None:
    rng = np.random.default_rng(0)
    state = np.zeros(14)
    smooth = np.tile(np.linspace(0.0, 0.2, 50)[:, None], (1, 14))
    rough = rng.uniform(-0.25, 0.25, (50, 14))  # every step clamped
    for cmd in (smooth, rough):
        filt.check(cmd, state, DT)
        start = time.perf_counter()
        for _ in range(200):
            filt.check(cmd, state, DT)
        per_call = (time.perf_counter() - start) / 200
        assert per_call < 2e-3, f"{per_call * 1e6:.0f} us"
