"""TrajectoryExecutor follows joint_trajectory_controller rules (pure numpy, no MuJoCo)."""

from __future__ import annotations

import numpy as np
import pytest

from qvla_core.sim.trajectory_executor import TrajectoryExecutor

NAMES = ["a", "b", "c"]


def make(initial: tuple[float, ...] = (0.0, 0.0, 0.0), **kw: bool) -> TrajectoryExecutor:
    return TrajectoryExecutor(NAMES, np.array(initial), **kw)


def test_holds_initial_without_trajectory() -> None:
    ex = make((1.0, 2.0, 3.0))
    np.testing.assert_allclose(ex.target(0.0), [1, 2, 3])
    np.testing.assert_allclose(ex.target(100.0), [1, 2, 3])
    assert not ex.is_active(0.0)


def test_zero_stamp_starts_now_and_interpolates_from_current_command_to_first_point() -> None:
    ex = make()
    assert ex.accept(0.0, NAMES, [1.0, 2.0], np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), now=10.0)
    np.testing.assert_allclose(ex.target(10.0), [0, 0, 0])
    np.testing.assert_allclose(ex.target(10.5), [0.5, 1.0, 1.5])  # current command -> first point
    np.testing.assert_allclose(ex.target(11.0), [1, 2, 3])
    np.testing.assert_allclose(ex.target(11.25), [1.5, 2.0, 2.5])  # linear between points
    np.testing.assert_allclose(ex.target(12.0), [3, 2, 1])
    np.testing.assert_allclose(ex.target(50.0), [3, 2, 1])  # hold the last point
    assert ex.is_active(11.9) and not ex.is_active(12.0)


def test_future_start_holds_until_start_time() -> None:
    ex = make()
    assert ex.accept(5.0, NAMES, [1.0], np.array([[2.0, 2.0, 2.0]]), now=4.0)
    np.testing.assert_allclose(ex.target(4.5), [0, 0, 0])
    np.testing.assert_allclose(ex.target(5.0), [0, 0, 0])
    np.testing.assert_allclose(ex.target(5.5), [1, 1, 1])
    np.testing.assert_allclose(ex.target(6.0), [2, 2, 2])


def test_joint_names_mapped_by_name() -> None:
    ex = make()
    assert ex.accept(0.0, ["c", "a", "b"], [1.0], np.array([[3.0, 1.0, 2.0]]), now=0.0)
    np.testing.assert_allclose(ex.target(1.0), [1, 2, 3])


def test_new_trajectory_replaces_running_one_from_its_start_time() -> None:
    ex = make()
    ex.accept(0.0, NAMES, [2.0], np.array([[2.0, 2.0, 2.0]]), now=0.0)  # ramps 1 unit/s
    # Received at t=0.5, starts at t=1.0: the old trajectory runs until 1.0 ...
    assert ex.accept(1.0, NAMES, [1.0], np.array([[-1.0, -1.0, -1.0]]), now=0.5)
    np.testing.assert_allclose(ex.target(0.75), [0.75] * 3)
    np.testing.assert_allclose(ex.target(1.0), [1.0] * 3)
    # ... then the new one interpolates from the command at its start (1.0) to its first point.
    np.testing.assert_allclose(ex.target(1.5), [0.0] * 3)
    np.testing.assert_allclose(ex.target(2.0), [-1.0] * 3)
    np.testing.assert_allclose(ex.target(3.0), [-1.0] * 3)


def test_points_in_the_past_are_dropped() -> None:
    ex = make()
    pos = np.array([[10.0] * 3, [1.0] * 3, [2.0] * 3])
    # start 1.0, points at 1.0, 2.0, 3.0; received at 2.5: the first two are past.
    assert ex.accept(1.0, NAMES, [0.0, 1.0, 2.0], pos, now=2.5)
    np.testing.assert_allclose(ex.target(2.5), [0.0] * 3)  # no jump to a dropped point
    np.testing.assert_allclose(ex.target(2.75), [1.0] * 3)  # current command -> next future point
    np.testing.assert_allclose(ex.target(3.0), [2.0] * 3)


def test_wholly_past_trajectory_rejected_and_running_one_kept() -> None:
    ex = make()
    ex.accept(0.0, NAMES, [1.0], np.array([[1.0, 1.0, 1.0]]), now=0.0)
    assert not ex.accept(1.0, NAMES, [0.5, 1.0], np.ones((2, 3)) * 5, now=3.0)
    assert ex.last_rejection is not None and "past" in ex.last_rejection
    np.testing.assert_allclose(ex.target(3.0), [1.0] * 3)


@pytest.mark.parametrize(
    ("names", "tfs", "pos", "why"),
    [
        (["a", "b", "x"], [1.0], np.zeros((1, 3)), "unknown"),
        (["a", "a", "b"], [1.0], np.zeros((1, 3)), "repeat"),
        (["a", "b"], [1.0], np.zeros((1, 2)), "partial"),
        (NAMES, [], np.zeros((0, 3)), "no points"),
        (NAMES, [1.0, 1.0], np.zeros((2, 3)), "increasing"),
        (NAMES, [1.0], np.zeros((1, 2)), "shaped"),
        (NAMES, [1.0], np.array([[0.0, np.nan, 0.0]]), "finite"),
    ],
)
def test_invalid_trajectories_rejected_with_reason(
    names: list[str], tfs: list[float], pos: np.ndarray, why: str
) -> None:
    ex = make((1.0, 1.0, 1.0))
    assert not ex.accept(0.0, names, tfs, pos, now=0.0)
    assert ex.last_rejection is not None and why in ex.last_rejection
    np.testing.assert_allclose(ex.target(5.0), [1, 1, 1])


def test_partial_goal_when_allowed_holds_missing_joints() -> None:
    ex = make((1.0, 1.0, 1.0), allow_partial_joints_goal=True)
    assert ex.accept(0.0, ["b"], [1.0], np.array([[3.0]]), now=0.0)
    np.testing.assert_allclose(ex.target(1.0), [1.0, 3.0, 1.0])


def test_hold_cancels() -> None:
    ex = make()
    ex.accept(0.0, NAMES, [1.0], np.ones((1, 3)), now=0.0)
    ex.hold(0.5)
    np.testing.assert_allclose(ex.target(2.0), [0.5] * 3)


def test_first_point_at_start_jumps() -> None:
    ex = make()
    assert ex.accept(0.0, NAMES, [0.0, 1.0], np.array([[1.0] * 3, [2.0] * 3]), now=0.0)
    np.testing.assert_allclose(ex.target(0.0), [1.0] * 3)
    np.testing.assert_allclose(ex.target(0.5), [1.5] * 3)


def test_streaming_chunks_stay_continuous() -> None:
    """Chunks re-sent every 0.2 s with start = now continue smoothly (no jumps)."""
    ex = make()
    dt = 0.02
    prev = ex.target(0.0)
    for k in range(100):
        now = k * dt
        if k % 10 == 0:
            times = [dt * (i + 1) for i in range(50)]
            pos = np.array([[np.sin(now + t)] * 3 for t in times])
            assert ex.accept(now, NAMES, times, pos, now=now)
        cur = ex.target(now + dt)
        assert np.max(np.abs(cur - prev)) < 0.05
        prev = cur
