"""VLN metrics on hand-made trajectories: SR, OSR, NE, TL, SPL, collisions, wrong object."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qvla_core.sim.nav.metrics import episode_metrics, shortest_path_length, summarize
from qvla_core.sim.nav.scene import BASE_RADIUS, NavObject, Rect, open_room


def test_straight_success_and_spl() -> None:
    line = np.column_stack([np.linspace(0.0, 4.0, 41), np.zeros(41)])
    m = episode_metrics(line, (4.5, 0.0), shortest_path=3.5, collisions=0)
    assert m.success and m.oracle_success
    assert m.navigation_error == pytest.approx(0.5)
    assert m.trajectory_length == pytest.approx(4.0)
    assert m.spl == pytest.approx(3.5 / 4.0)
    # A path shorter than the shortest one (e.g. the shortest was measured on a coarser map) caps at 1.
    assert episode_metrics(line, (4.5, 0.0), shortest_path=5.0).spl == pytest.approx(1.0)


def test_detour_lowers_spl() -> None:
    detour = np.array([[0.0, 0.0], [0.0, 3.0], [4.0, 3.0], [4.0, 0.0]])
    m = episode_metrics(detour, (4.5, 0.0), shortest_path=3.5)
    assert m.success
    assert m.trajectory_length == pytest.approx(10.0)
    assert m.spl == pytest.approx(0.35)


def test_passing_by_is_oracle_success_only() -> None:
    past = np.array([[0.0, 0.0], [4.2, 0.0], [8.0, 0.0]])
    m = episode_metrics(past, (4.5, 0.0), shortest_path=3.5)
    assert not m.success and m.oracle_success
    assert m.navigation_error == pytest.approx(3.5)
    assert m.spl == 0.0


def test_success_needs_a_stop_and_the_radius_is_inclusive() -> None:
    near = np.array([[0.0, 0.0], [3.5, 0.0]])
    assert episode_metrics(near, (4.5, 0.0), shortest_path=3.5).success  # exactly 1 m
    m = episode_metrics(near, (4.5, 0.0), shortest_path=3.5, stopped=False)
    assert not m.success and m.oracle_success and m.spl == 0.0


def test_wrong_object_and_collisions() -> None:
    path = np.array([[0.0, 0.0], [0.0, 3.0]])
    m = episode_metrics(path, (5.0, 0.0), shortest_path=4.0, collisions=2, others=[(0.5, 3.0)])
    assert m.wrong_object and not m.success and m.collisions == 2
    right = episode_metrics(path, (0.5, 3.2), shortest_path=2.5, others=[(0.5, 3.0)])
    assert right.success and not right.wrong_object


def test_summarize_means() -> None:
    a = episode_metrics([[0.0, 0.0], [4.0, 0.0]], (4.5, 0.0), shortest_path=3.5, collisions=1)
    b = episode_metrics([[0.0, 0.0], [1.0, 0.0]], (4.5, 0.0), shortest_path=3.5)
    s = summarize([a, b])
    assert s["episodes"] == 2
    assert s["SR"] == 0.5 and s["OSR"] == 0.5
    assert s["NE"] == pytest.approx((0.5 + 3.5) / 2)
    assert s["TL"] == pytest.approx(2.5)
    assert s["SPL"] == pytest.approx(3.5 / 4.0 / 2)
    assert s["collisions"] == 0.5 and s["collision_free"] == 0.5


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="shortest_path"):
        episode_metrics([[0.0, 0.0]], (1.0, 0.0), shortest_path=0.0)
    with pytest.raises(ValueError, match="positions"):
        episode_metrics(np.zeros((3,)), (1.0, 0.0), shortest_path=1.0)
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_shortest_path_is_geodesic_around_a_wall() -> None:
    goal = NavObject("red", "cylinder", 8.0, 3.0)
    room = open_room(10.0, 6.0, [goal], start=(1.0, 3.0, 0.0))
    # Open room: straight line to the 1 m success region.
    assert shortest_path_length(room) == pytest.approx(8.0 - 1.0 - 1.0, abs=0.1)
    # A wall across the middle from y=0 to y=5 forces a detour through the 1 m gap at the top.
    wall = Rect(4.95, 0.0, 5.05, 5.0)
    blocked = open_room(10.0, 6.0, [goal], start=(1.0, 3.0, 0.0))
    blocked = type(blocked)(-1, (*blocked.walls, wall), blocked.objects, 0, blocked.start, blocked.bounds)
    gap_y = 5.0 + 0.05 + BASE_RADIUS  # lowest point the base's centre clears the wall's end
    # Via the wall's corner (5, gap_y) to the success circle around the goal.
    via = math.hypot(5.0 - 1.0, gap_y - 3.0) + math.hypot(8.0 - 5.0, 3.0 - gap_y) - 1.0
    assert shortest_path_length(blocked) == pytest.approx(via, abs=0.35)
    assert shortest_path_length(blocked) > shortest_path_length(room) + 1.0


def test_target_visibility_from_the_start() -> None:
    from qvla_core.sim.nav.metrics import target_visibility

    goal = NavObject("red", "cylinder", 8.0, 3.0)
    other = NavObject("blue", "box", 4.5, 3.0)
    assert target_visibility(open_room(10.0, 6.0, [goal], start=(1.0, 3.0, 0.0))) == "in view"
    # 40 degrees off the heading: outside the 75-degree field of view, nothing in the way.
    assert (
        target_visibility(open_room(10.0, 6.0, [goal], start=(1.0, 3.0, math.radians(40)))) == "turn to see"
    )
    assert target_visibility(open_room(10.0, 6.0, [goal], start=(1.0, 3.0, math.pi))) == "turn to see"
    # Another object on the line of sight, or a wall across the room, hides it.
    assert target_visibility(open_room(10.0, 6.0, [goal, other], start=(1.0, 3.0, 0.0))) == "hidden"
    room = open_room(10.0, 6.0, [goal], start=(1.0, 3.0, 0.0))
    walled = type(room)(
        -1, (*room.walls, Rect(4.95, 0.0, 5.05, 5.0)), room.objects, 0, room.start, room.bounds
    )
    assert target_visibility(walled) == "hidden"
