"""The searching navigation expert: it looks around, explores, and goes to the named object only once
its camera has seen it; never earlier, whatever it knows of the map."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from qvla_core.embodiment import load_embodiment
from qvla_core.policy import Observation, Policy
from qvla_core.sim.nav.controller import compose
from qvla_core.sim.nav.env import NavSim
from qvla_core.sim.nav.episode import run_episode
from qvla_core.sim.nav.expert import NavExpert
from qvla_core.sim.nav.generate import generate_scene
from qvla_core.sim.nav.metrics import HALF_FOV, in_sight, target_visibility
from qvla_core.sim.nav.planner import OccupancyGrid
from qvla_core.sim.nav.scene import NavObject, NavScene, Rect, open_room
from qvla_core.sim.nav.search import SearchingExpert, view_mask

ROOT = Path(__file__).resolve().parents[2]
EMB = load_embodiment(ROOT / "config" / "robots" / "vln_nav.yaml")


def obs(instruction: str, stamp: float = 0.0) -> Observation:
    return Observation(images={}, state=np.zeros(0, dtype=np.float32), instruction=instruction, stamp=stamp)


def test_view_mask_is_a_fan_stopped_by_walls() -> None:
    # A wall across the room at x = 5, from y = 0 to 4 (the room is 10 x 6); the robot at (2, 2) faces +x.
    room = open_room(10.0, 6.0, [], start=(2.0, 2.0, 0.0))
    room = dataclasses.replace(room, walls=(*room.walls, Rect(4.95, 0.0, 5.05, 4.0)))
    opaque = OccupancyGrid.from_scene(room, inflation=0.0)
    seen = view_mask(opaque, room.start, HALF_FOV, 6.0)

    def at(x: float, y: float) -> bool:
        return bool(seen[opaque.cell(x, y)])

    assert at(4.0, 2.0) and at(3.0, 2.5)  # ahead, before the wall
    assert not at(6.0, 2.0)  # ahead, behind the wall
    assert not at(1.0, 2.0) and not at(2.0, 4.5)  # behind it, and to its side beyond the field of view
    # The fan is 37.5 degrees each side: 2 m ahead it reaches 1.53 m to the left, not 2 m.
    assert at(4.0, 2.0 + 2.0 * math.tan(HALF_FOV) - 0.2) and not at(4.0, 4.0)


def test_looks_around_counter_clockwise_before_anything_else() -> None:
    # The target is behind the robot in an open room: it turns on the spot, it does not drive to it.
    goal = NavObject("blue", "box", 1.0, 3.0)
    room = open_room(10.0, 6.0, [goal], start=(6.0, 3.0, 0.0))
    expert = SearchingExpert(EMB)
    assert isinstance(expert, Policy)
    wp = expert.infer(obs("go to the blue box"), scene=room, pose=room.start).actions
    np.testing.assert_allclose(wp[:, :2], 0.0, atol=1e-6)
    assert 0.5 < wp[0, 2] < 1.6  # counter-clockwise, about TURN_RATE per second
    assert not expert.found


def test_goes_to_the_object_once_seen_like_the_shortest_path_expert() -> None:
    goal = NavObject("blue", "box", 8.0, 3.0)
    room = open_room(10.0, 6.0, [goal, NavObject("red", "sphere", 3.0, 5.0)], start=(4.0, 3.0, 0.0))
    search, shortest = SearchingExpert(EMB), NavExpert(EMB)
    a = search.infer(obs("go to the blue box"), scene=room, pose=room.start).actions
    b = shortest.infer(obs("go to the blue box"), scene=room, pose=room.start).actions
    assert search.found
    np.testing.assert_allclose(a, b)


def _hidden_target_scene() -> NavScene:
    for seed in range(200):
        scene = generate_scene(seed)
        others = [o for o in scene.objects if o is not scene.target_object]
        if target_visibility(scene) == "hidden" and len(others) >= 2:
            return scene
    raise AssertionError("no scene with a hidden target in seeds 0..199")


def test_does_not_know_where_an_unseen_object_is() -> None:
    """Its drive does not depend on which object is named until it has seen that object: the same
    scene with another object named gives the same motion up to the first sighting."""
    scene = _hidden_target_scene()
    opaque = OccupancyGrid.from_scene(scene, inflation=0.0)
    names = [k for k, o in enumerate(scene.objects) if k != scene.target]
    variants = [scene, dataclasses.replace(scene, target=names[0])]
    plans: list[list[np.ndarray]] = []
    for variant in variants:
        expert = SearchingExpert(EMB)
        pose = variant.start
        out = []
        for t in range(40):  # drive along its own plan, one second at a time
            wp = expert.infer(obs(variant.instruction, float(t)), scene=variant, pose=pose).actions
            if expert.found:
                break
            out.append(wp)
            pose = tuple(compose(pose, wp[0:1])[0])  # type: ignore[assignment]
        plans.append(out)
    common = min(len(p) for p in plans)
    assert common >= 5  # the look-around at least
    for a, b in zip(plans[0][:common], plans[1][:common], strict=True):
        np.testing.assert_allclose(a, b)
    # And "found" means the camera had it in view within range.
    assert in_sight(opaque, scene.start, scene.target_object, HALF_FOV) == "hidden"


@pytest.mark.parametrize("seed", [10000, 10002])
def test_finds_hidden_objects_in_generated_scenes(seed: int) -> None:
    scene = generate_scene(seed)
    assert target_visibility(scene) == "hidden"
    sim = NavSim(64, 48)
    try:
        expert = SearchingExpert(EMB, ground_truth=sim)
        log = run_episode(sim, expert, seed, max_time_s=60.0)
    finally:
        sim.close()
    assert log.metrics.success and log.collisions == 0
    # It looked around first: the first 3 s turned the base and hardly moved it.
    first = log.poses[: round(3.0 / 0.05)]
    assert np.hypot(*(first[-1, :2] - first[0, :2])) < 0.1
    # It searched: its drive was longer than the shortest path it would have taken knowing the spot.
    assert log.metrics.trajectory_length > log.metrics.shortest_path
