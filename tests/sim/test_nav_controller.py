"""The navigation sim's local controller and frame helpers (pure numpy, no MuJoCo)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qvla_core.sim.nav.controller import Limits, PathFollower, compose, relative, wrap

DT = 0.05


def drive(
    follower: PathFollower, pose: tuple[float, float, float], seconds: float
) -> list[tuple[float, ...]]:
    """Integrate a perfect unicycle under the follower; returns (x, y, yaw, v, w) per step."""
    x, y, yaw = pose
    out = []
    for _ in range(round(seconds / DT)):
        v, w = follower.command((x, y, yaw), DT)
        x, y = x + v * math.cos(yaw) * DT, y + v * math.sin(yaw) * DT
        yaw = wrap(yaw + w * DT)
        out.append((x, y, yaw, v, w))
    return out


def test_rep103_frames_x_forward_y_left_yaw_ccw() -> None:
    facing_plus_y = (1.0, 2.0, math.pi / 2)
    world = compose(facing_plus_y, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]])
    # 1 m forward of a robot facing world +y is world +y; 1 m to its left is world -x.
    np.testing.assert_allclose(world[0], [1.0, 3.0, math.pi / 2], atol=1e-12)
    np.testing.assert_allclose(world[1], [0.0, 2.0, math.pi / 2 + 0.5], atol=1e-12)
    np.testing.assert_allclose(relative(facing_plus_y, world), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]], atol=1e-12)
    assert wrap(3 * math.pi / 2) == pytest.approx(-math.pi / 2)


def test_a_waypoint_to_the_left_turns_counter_clockwise() -> None:
    f = PathFollower()
    pose = (0.0, 0.0, 0.0)
    f.set_path(compose(pose, [[2.0, 1.0, 0.0]]), start=pose)
    _, w = f.command(pose, DT)
    assert w > 0.0
    f.set_path(compose(pose, [[2.0, -1.0, 0.0]]), start=pose)
    f.last = (0.0, 0.0)
    _, w = f.command(pose, DT)
    assert w < 0.0


@pytest.mark.parametrize("seed", range(6))
def test_follows_random_paths_within_speed_and_acceleration_limits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lim = Limits(max_speed=0.7, max_yaw_rate=1.2, max_accel=0.8, max_yaw_accel=2.0)
    f = PathFollower(lim)
    start = (0.0, 0.0, float(rng.uniform(-math.pi, math.pi)))
    local = np.cumsum(rng.uniform([0.3, -1.0, 0.0], [1.2, 1.0, 0.0], size=(6, 3)), axis=0)
    local[:, 2] = rng.uniform(-math.pi, math.pi, size=6)
    path = compose(start, local)
    f.set_path(path, start=start)
    steps = drive(f, start, 40.0)
    v = np.array([s[3] for s in steps])
    w = np.array([s[4] for s in steps])
    assert np.all(v >= 0.0) and np.all(v <= lim.max_speed + 1e-12)
    assert np.all(np.abs(w) <= lim.max_yaw_rate + 1e-12)
    dv = np.abs(np.diff(np.concatenate([[0.0], v])))
    dw = np.abs(np.diff(np.concatenate([[0.0], w])))
    assert dv.max() <= lim.max_accel * DT + 1e-9
    assert dw.max() <= lim.max_yaw_accel * DT + 1e-9
    x, y, yaw = steps[-1][:3]
    assert f.done
    assert math.hypot(x - path[-1, 0], y - path[-1, 1]) < f.xy_tolerance + 0.05
    assert abs(wrap(yaw - path[-1, 2])) < f.yaw_tolerance + 0.05
    assert abs(v[-1]) < 1e-9 and abs(w[-1]) < 1e-9
    # It passed near every waypoint (it follows the path, not only its end).
    xy = np.array([s[:2] for s in steps])
    for p in path[:-1]:
        assert np.min(np.hypot(xy[:, 0] - p[0], xy[:, 1] - p[1])) < 0.6


def test_goal_mode_and_stop() -> None:
    f = PathFollower()
    f.set_goal((3.0, -2.0, math.pi), (0.0, 0.0, 0.0))
    steps = drive(f, (0.0, 0.0, 0.0), 20.0)
    x, y, yaw = steps[-1][:3]
    assert math.hypot(x - 3.0, y + 2.0) < 0.2 and abs(wrap(yaw - math.pi)) < 0.2
    f.set_goal((10.0, 0.0, 0.0), (x, y, yaw))
    drive(f, (x, y, yaw), 3.0)
    assert f.last[0] > 0.1 or abs(f.last[1]) > 0.1
    f.stop()
    steps = drive(f, (x, y, yaw), 2.0)
    assert steps[-1][3] == 0.0 and steps[-1][4] == 0.0


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="max_speed"):
        Limits(max_speed=0.0)
    with pytest.raises(ValueError, match="finite"):
        PathFollower().set_path([[math.nan, 0.0, 0.0]])


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_a_turn_on_the_spot_past_half_a_circle_goes_the_way_it_was_asked(direction: float) -> None:
    # Waypoints on the robot's own spot, 1.2 rad apart: 3.6 rad in all. Aligning only to the last
    # one (wrapped to -2.68 rad) would turn 2.68 rad the other way; it turns through them in order.
    f = PathFollower()
    pose = (1.0, 2.0, 0.3)
    local = [[0.0, 0.0, wrap(direction * 1.2 * k)] for k in (1, 2, 3)]
    f.set_path(compose(pose, local), start=pose)
    steps = drive(f, pose, 8.0)
    w = np.array([s[4] for s in steps])
    turned = float(np.sum(w) * DT)
    assert f.done
    assert turned == pytest.approx(direction * 3.6, abs=0.2)
    assert np.all(np.sign(w[np.abs(w) > 1e-9]) == direction)
    assert math.hypot(steps[-1][0] - 1.0, steps[-1][1] - 2.0) < 1e-9


def test_a_base_turning_to_and_fro_has_not_come_to_rest() -> None:
    """The episode ends when the base stands still for 2 s; one that turns away and back within the
    window ends where it began but has not stopped (the sim's and the ROS bench's rule alike)."""
    from qvla_core.sim.nav.episode import RestDetector
    from qvla_ros.tools.collect_nav import came_to_rest

    start = (0.0, 0.0, 0.0)
    window = round(2.0 / DT)
    turning = [(1.0, 0.0, 0.8 * math.sin(math.pi * k / window)) for k in range(window + 1)]
    standing = [(1.0, 0.0, 0.0)] * (window + 1)
    for poses, stopped in ((turning, False), (standing, True)):
        rest = RestDetector(start, window)
        rest.update((1.0, 0.0, 0.0))  # it has moved off its start
        assert any(rest.update(p) for p in poses) is stopped
        odom = [(0.0, *start)] + [(1.0 + k * DT, *p) for k, p in enumerate(poses)]
        assert (came_to_rest(odom, 2.0) is not None) is stopped
