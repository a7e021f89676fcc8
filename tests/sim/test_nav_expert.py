"""The privileged navigation expert and the chance baseline, as Policy plugins."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from qvla_core.embodiment import load_embodiment
from qvla_core.errors import ObservationError
from qvla_core.policy import Observation, Policy
from qvla_core.sim.nav.controller import compose, wrap
from qvla_core.sim.nav.expert import GOAL_RADIUS, NavExpert, RandomObjectBaseline
from qvla_core.sim.nav.generate import generate_scene
from qvla_core.sim.nav.scene import NavObject, open_room

ROOT = Path(__file__).resolve().parents[2]
EMB = load_embodiment(ROOT / "config" / "robots" / "vln_nav.yaml")


def obs(instruction: str, stamp: float = 0.0) -> Observation:
    return Observation(images={}, state=np.zeros(0, dtype=np.float32), instruction=instruction, stamp=stamp)


def test_is_a_policy_emitting_the_embodiments_waypoints() -> None:
    expert = NavExpert(EMB)
    assert isinstance(expert, Policy)
    scene = generate_scene(4)
    chunk = expert.infer(obs(scene.instruction, 3.0), scene=scene, pose=scene.start)
    assert chunk.actions.shape == (EMB.horizon, 3) and chunk.actions.dtype == np.float32
    assert chunk.channel_names == ("x", "y", "yaw") and chunk.dt == 1.0 and chunk.observation_stamp == 3.0
    assert expert.last_target is scene.target_object
    lower = np.array([a.lower for a in EMB.action])
    upper = np.array([a.upper for a in EMB.action])
    assert np.all(chunk.actions >= lower) and np.all(chunk.actions <= upper)


def test_waypoints_are_in_base_link_rep103() -> None:
    goal = NavObject("blue", "box", 8.0, 3.0)
    others = [NavObject("red", "sphere", 3.0, 5.0)]
    room = open_room(10.0, 6.0, [goal, *others], start=(2.0, 3.0, math.pi / 2))
    expert = NavExpert(EMB)
    # Facing world +y, the goal (world +x) is to the robot's right: it turns clockwise on the spot
    # (yaw < 0) for two seconds, then drives along its old -y axis (y < 0), heading yaw -pi/2.
    wp = expert.infer(obs("go to the blue box"), scene=room, pose=room.start).actions
    np.testing.assert_allclose(wp[:2], [[0.0, 0.0, -math.pi / 4], [0.0, 0.0, -math.pi / 2]], atol=0.05)
    np.testing.assert_allclose(wp[:, 0], 0.0, atol=0.05)
    np.testing.assert_allclose(wp[2:5, 1], [-0.6, -1.2, -1.8], atol=0.05)
    np.testing.assert_allclose(wp[1:6, 2], -math.pi / 2, atol=0.05)
    # Facing the goal instead: straight ahead along x, no turn, stopping GOAL_RADIUS short of it.
    pose = (4.0, 3.0, 0.0)
    wp = expert.infer(obs("go to the blue box"), scene=room, pose=pose).actions
    np.testing.assert_allclose(wp[:, 1:], 0.0, atol=0.05)
    np.testing.assert_allclose(wp[:3, 0], [0.6, 1.2, 1.8], atol=0.05)
    world = compose(pose, wp)
    assert math.hypot(world[-1, 0] - goal.x, world[-1, 1] - goal.y) == pytest.approx(GOAL_RADIUS, abs=0.1)
    # Behind it, far: it turns around and stops short rather than leave the YAML's x >= -1 limit.
    wp = expert.infer(obs("go to the blue box"), scene=room, pose=(2.0, 3.0, math.pi)).actions
    assert wp[:, 0].min() >= -1.0 and abs(wrap(float(wp[-1, 2]))) > 3.0
    np.testing.assert_allclose(wp[:3, :2], 0.0, atol=1e-6)
    # At the goal: stay put, facing the object (it is 90 deg to the left here: yaw +pi/2).
    wp = expert.infer(obs("go to the blue box"), scene=room, pose=(8.0, 2.3, 0.0)).actions
    np.testing.assert_allclose(wp[:, :2], 0.0, atol=1e-9)
    np.testing.assert_allclose(wp[:, 2], math.pi / 2, atol=1e-6)


def test_the_instruction_picks_the_object() -> None:
    scene = generate_scene(8)
    expert = NavExpert(EMB)
    for o in scene.objects:
        expert.infer(obs(f"Please go to the {o.colour} {o.shape}."), scene=scene, pose=scene.start)
        assert expert.last_target is o


def test_refuses_without_privileged_input_or_with_an_unknown_object() -> None:
    scene = generate_scene(8)
    with pytest.raises(ObservationError, match="privileged"):
        NavExpert(EMB).infer(obs(scene.instruction))
    with pytest.raises(ObservationError, match="names no single object"):
        NavExpert(EMB).infer(obs("go to the purple teapot"), scene=scene, pose=scene.start)
    aloha = load_embodiment(ROOT / "config" / "robots" / "aloha.yaml")
    with pytest.raises(ValueError, match="waypoint"):
        NavExpert(aloha)


def test_baseline_is_deterministic_per_scene_and_ignores_words() -> None:
    picks = []
    for seed in range(40):
        scene = generate_scene(seed)
        a = RandomObjectBaseline(EMB).choose_target(scene, scene.instruction)
        assert a is RandomObjectBaseline(EMB).choose_target(scene, "whatever")
        picks.append(a is scene.target_object)
    assert 0 < sum(picks) < 30  # right sometimes, by chance (~1 in 5)


mujoco = pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install mujoco")


@pytest.mark.sim
@pytest.mark.parametrize("seed", [31, 32, 33])
def test_expert_succeeds_in_the_sim_and_the_baseline_is_measured(seed: int) -> None:
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.episode import run_episode

    sim = NavSim(64, 48)
    try:
        log = run_episode(sim, NavExpert(EMB, ground_truth=sim), seed, max_time_s=90.0)
        m = log.metrics
        assert m.success and m.stopped and m.navigation_error <= 1.0
        assert m.spl > 0.8 and m.collisions == 0
        base = run_episode(sim, RandomObjectBaseline(EMB, ground_truth=sim), seed, max_time_s=90.0)
        chose = RandomObjectBaseline(EMB).choose_target(sim.scene, "")
        assert base.metrics.success == (chose is sim.scene.target_object)
        assert math.hypot(base.poses[-1, 0] - chose.x, base.poses[-1, 1] - chose.y) <= 1.0
    finally:
        sim.close()
