"""Chunk scheduling on the robot clock: timing, the three splice modes, RTC prefixes, continuity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qvla_core.errors import SafetyError
from qvla_core.policy import ActionChunk
from qvla_core.runtime.scheduler import (
    ChunkScheduler,
    Mode,
    ScheduledTrajectory,
    apply_prefix,
    boundary_jump,
    rtc_weights,
)

DT, H, A = 0.02, 50, 2
NAMES = ("j0", "j1")


def truth(t: np.ndarray) -> np.ndarray:
    """A smooth ground-truth joint trajectory, (len(t), A)."""
    return np.stack([0.5 * np.sin(2 * math.pi * 0.5 * t), 0.3 * np.cos(2 * math.pi * 0.3 * t)], axis=1)


def chunk_from(stamp: float, bias: float = 0.0, actions: np.ndarray | None = None) -> ActionChunk:
    if actions is None:
        actions = truth(stamp + np.arange(H) * DT) + bias
    return ActionChunk(
        actions=actions.astype(np.float32), channel_names=NAMES, dt=DT, observation_stamp=stamp
    )


def test_rows_are_placed_on_the_robot_clock() -> None:
    sched = ChunkScheduler(DT, H, A, "replace", lead_s=0.01)
    actions = np.arange(H * A, dtype=np.float32).reshape(H, A)
    traj = sched.splice(chunk_from(10.0, actions=actions), now=10.075)
    assert traj is not None
    # Rows due before now + lead = 10.085 are history: the first sent is row 5, due at 10.10.
    assert traj.first_row == 5
    assert traj.start_stamp == pytest.approx(10.10)
    assert traj.start_stamp >= 10.075 + 0.01
    assert traj.dt == DT and traj.observation_stamp == 10.0
    assert sched.planned_start(10.0, 10.075) == traj.start_stamp
    np.testing.assert_array_equal(traj.positions, actions[5:])
    assert not traj.positions.flags.writeable  # it is the committed plan too
    np.testing.assert_allclose(traj.times(), 10.0 + np.arange(5, H) * DT)
    # A row due exactly at now + lead is kept despite float rounding.
    exact = ChunkScheduler(DT, H, A, "replace", lead_s=0.0).splice(chunk_from(0.1), now=0.1 + 3 * DT)
    assert exact is not None and exact.first_row == 3


def test_past_and_stale_chunks_send_nothing() -> None:
    sched = ChunkScheduler(DT, H, A, "replace")
    assert sched.splice(chunk_from(0.0), now=H * DT) is None  # wholly in the past
    assert sched.current_target(1.0) is None
    assert sched.splice(chunk_from(1.0), now=1.05) is not None
    assert sched.splice(chunk_from(0.9), now=1.06) is None  # older observation than the plan's
    assert sched.splice(chunk_from(1.0), now=1.07) is not None  # same observation again is fine


def test_bad_chunks_are_rejected() -> None:
    sched = ChunkScheduler(DT, H, A, "replace")
    with pytest.raises(ValueError, match="does not match"):
        sched.splice(chunk_from(0.0, actions=np.zeros((H, A + 1))), now=0.0)
    with pytest.raises(ValueError, match="dt"):
        sched.splice(
            ActionChunk(np.zeros((H, A), np.float32), NAMES, dt=0.05, observation_stamp=0.0), now=0.0
        )
    bad = np.zeros((H, A))
    bad[7, 1] = np.nan
    with pytest.raises(SafetyError, match="NaN"):
        sched.splice(chunk_from(0.0, actions=bad), now=0.0)
    with pytest.raises(ValueError, match="mode"):
        ChunkScheduler(DT, H, A, "blend")  # type: ignore[arg-type]


def test_current_target_follows_the_controller() -> None:
    sched = ChunkScheduler(DT, H, A, "replace", lead_s=0.0)
    first = sched.splice(chunk_from(0.0, actions=np.zeros((H, A))), now=0.0)
    assert first is not None
    second = sched.splice(chunk_from(0.1, actions=np.ones((H, A))), now=0.15)
    assert second is not None and second.start_stamp == pytest.approx(0.16)
    target = sched.current_target(0.155)
    assert target is not None
    np.testing.assert_array_equal(target, 0.0)  # old trajectory runs until the new one starts
    np.testing.assert_array_equal(sched.current_target(0.16), 1.0)
    np.testing.assert_array_equal(sched.current_target(100.0), 1.0)  # held after the end
    assert sched.plan_end == pytest.approx(0.1 + (H - 1) * DT)
    sched.reset()
    assert sched.current_target(0.2) is None and sched.plan_end is None


def test_safety_hook_is_committed_and_can_veto() -> None:
    sched = ChunkScheduler(DT, H, A, "replace", lead_s=0.0)
    traj = sched.splice(
        chunk_from(0.0, actions=np.full((H, A), 5.0)), now=0.0, safety=lambda p: np.minimum(p, 1.0)
    )
    assert traj is not None
    np.testing.assert_array_equal(traj.positions, 1.0)
    np.testing.assert_array_equal(sched.current_target(0.5), 1.0)

    def veto(_: np.ndarray) -> np.ndarray:
        raise SafetyError("no")

    with pytest.raises(SafetyError):
        sched.splice(chunk_from(0.2, actions=np.zeros((H, A))), now=0.2, safety=veto)
    np.testing.assert_array_equal(sched.current_target(0.5), 1.0)  # nothing committed


def test_rtc_weights_follow_black_et_al() -> None:
    w = rtc_weights(k_end=20, d=5)
    assert w.shape == (20,) and w.dtype == np.float32
    np.testing.assert_array_equal(w[:5], 1.0)
    soft = w[5:]
    assert (soft > 0).all() and (soft < 1).all() and (np.diff(soft) < 0).all()
    c = 15 / 16  # i = d: c = (k_end - d) / (k_end - d + 1)
    assert soft[0] == pytest.approx(c * math.expm1(c) / (math.e - 1), rel=1e-6)
    np.testing.assert_array_equal(rtc_weights(k_end=3, d=6), 1.0)  # plan ends before the chunk lands
    assert rtc_weights(3, 6).shape == (6,)
    assert rtc_weights(0, 0).shape == (0,)


def test_prefix_samples_the_plan_on_the_next_chunks_rows() -> None:
    sched = ChunkScheduler(DT, H, A, "rtc", lead_s=0.01)
    prefix, weight = sched.prefix(now=0.0, expected_delay=0.05)
    assert prefix.shape == (0, A) and weight.shape == (0,)  # nothing committed yet
    assert sched.splice(chunk_from(0.0), now=0.07) is not None
    # Next observation at 0.49, inference starts at 0.5, expected to land at 0.56 (+ lead 0.01).
    prefix, weight = sched.prefix(now=0.5, expected_delay=0.06, observation_stamp=0.49)
    # Rows 0..3 are due before 0.5 + 0.06 + 0.01 (history on arrival), row 4 is the first sent.
    d = math.ceil((0.5 + 0.06 + 0.01 - 0.49) / DT - 1e-9) + 1
    k_end = round((0.0 + (H - 1) * DT - 0.49) / DT) + 1  # rows up to the plan's last point
    assert d == 5 and k_end == 25
    assert prefix.shape == (k_end, A) and prefix.dtype == np.float32
    np.testing.assert_array_equal(weight[:d], 1.0)
    assert (weight[d:] < 1).all()
    # The plan's grid (from 0.0) is half a row off the prefix's (from 0.49): linear interpolation.
    np.testing.assert_allclose(prefix, truth(0.49 + np.arange(k_end) * DT), atol=1e-3)
    # Default observation stamp is now.
    p2, _ = sched.prefix(now=0.5, expected_delay=0.06)
    np.testing.assert_allclose(p2[0], truth(np.array([0.5]))[0], atol=1e-3)


def run(mode: Mode, biases: list[float], delay: float = 0.064, period: float = 0.3) -> list[float]:
    """Closed loop: observe (10 ms sync age), infer for ``delay``, splice; ``biases[j]`` offsets
    chunk j from the ground truth (disagreeing predictions). Returns the boundary jumps."""
    sched = ChunkScheduler(DT, H, A, mode, lead_s=0.005, ensemble_decay=0.1)
    prev: ScheduledTrajectory | None = None
    jumps = []
    t = 1.0
    for bias in biases:
        obs = t - 0.01
        raw = chunk_from(obs, bias)
        if mode == "rtc":
            prefix, weight = sched.prefix(now=t, expected_delay=delay, observation_stamp=obs)
            raw = chunk_from(obs, actions=apply_prefix(raw.actions, prefix, weight))
        traj = sched.splice(raw, now=t + delay)
        assert traj is not None
        assert traj.start_stamp >= t + delay + 0.005
        if prev is not None:
            jumps.append(boundary_jump(prev, traj))
            # The committed plan just before and at the switch is what the controller follows.
            before = sched.current_target(traj.start_stamp - 1e-6)
            assert before is not None
            assert np.abs(before - prev.position_at(traj.start_stamp - 1e-6)).max() < 1e-9
        prev = traj
        t += period + 0.0037  # not a multiple of dt: chunk grids are offset from each other
    return jumps


@pytest.mark.parametrize("mode", ["replace", "temporal_ensemble", "rtc"])
def test_every_mode_is_continuous_for_a_smooth_signal(mode: Mode) -> None:
    jumps = run(mode, [0.0] * 12)
    # Only linear interpolation error between offset grids remains: dt^2/8 * max|g''| ~ 5e-4.
    assert max(jumps) < 2e-3, jumps


def test_rtc_inpainting_beats_replace_when_chunks_disagree() -> None:
    biases = [0.05 * (-1) ** j for j in range(12)]
    replace = run("replace", biases)
    ensemble = run("temporal_ensemble", biases)
    rtc = run("rtc", biases)
    assert min(replace) > 0.09  # each chunk jumps by the disagreement (0.1)
    assert max(rtc) < 2e-3  # the executed prefix is reproduced, the switch is seamless
    assert max(rtc) < max(ensemble) < max(replace)


def test_rtc_continuity_survives_a_late_chunk() -> None:
    # Inference took longer than expected: the first sent row lies in the soft zone, so the
    # jump grows but stays well below replace's.
    sched = ChunkScheduler(DT, H, A, "rtc", lead_s=0.005)
    first = sched.splice(chunk_from(0.99, 0.05), now=1.05)
    assert first is not None
    prefix, weight = sched.prefix(now=1.3, expected_delay=0.06, observation_stamp=1.29)
    late = chunk_from(1.29, actions=apply_prefix(chunk_from(1.29, -0.05).actions, prefix, weight))
    traj = sched.splice(late, now=1.3 + 0.1)
    assert traj is not None
    assert 0.0 < boundary_jump(first, traj) < 0.05


def test_apply_prefix_blends_only_the_prefix_rows() -> None:
    actions = np.zeros((5, 2), np.float32)
    out = apply_prefix(actions, np.ones((3, 2), np.float32), np.array([1.0, 0.5, 0.0], np.float32))
    np.testing.assert_allclose(out[:, 0], [1.0, 0.5, 0.0, 0.0, 0.0])
    assert actions.max() == 0.0  # input untouched
