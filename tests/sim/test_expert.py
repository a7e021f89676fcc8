"""The scripted TransferCube expert: perception from the image and a closed-loop episode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip(
    "gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed: pip install gym-aloha==0.1.5"
)

from qvla_core.embodiment import Embodiment, load_embodiment  # noqa: E402
from qvla_core.policy import Observation, Policy  # noqa: E402
from qvla_core.sim.aloha_env import AlohaSim  # noqa: E402
from qvla_core.sim.expert import TransferCubeExpert  # noqa: E402
from qvla_core.sim.trajectory_executor import TrajectoryExecutor  # noqa: E402

ROBOT = Path(__file__).resolve().parents[2] / "config/robots/aloha.yaml"


@pytest.fixture(scope="module")
def embodiment() -> Embodiment:
    return load_embodiment(ROBOT)


@pytest.fixture(scope="module")
def sim() -> AlohaSim:
    return AlohaSim(width=640, height=480)


def observe(sim: AlohaSim) -> Observation:
    images = sim.render(["cam_high"])
    return Observation(
        images={k: v[None] for k, v in images.items()},
        state=sim.joint_positions().astype(np.float32),
        instruction="transfer the cube",
        stamp=sim.time,
    )


@pytest.mark.parametrize("seed", [0, 7, 13])
def test_locates_cube_from_image_within_1cm(sim: AlohaSim, embodiment: Embodiment, seed: int) -> None:
    expert = TransferCubeExpert(embodiment)
    sim.reset(seed)
    for _ in range(10):  # let the cube settle on the table
        sim.step(sim.joint_positions())
    image = sim.render(["cam_high"])["cam_high"]
    found = expert.locate_cube(image)
    assert found is not None
    err = np.linalg.norm(found[:2] - sim.object_pose()[:2])
    assert err < 0.01, (found, sim.object_pose())
    # Also at a quarter of the resolution (intrinsics follow the image size).
    small = image[::2, ::2]
    found_small = expert.locate_cube(small)
    assert found_small is not None and np.linalg.norm(found_small[:2] - sim.object_pose()[:2]) < 0.01
    assert expert.locate_cube(np.zeros_like(image)) is None


def test_chunk_shape_latency_and_protocol(sim: AlohaSim, embodiment: Embodiment) -> None:
    expert = TransferCubeExpert(embodiment)
    assert isinstance(expert, Policy)
    sim.reset(0)
    chunk = expert.infer(observe(sim))
    assert chunk.actions.shape == (embodiment.horizon, 14)
    assert chunk.actions.dtype == np.float32
    assert chunk.channel_names == embodiment.action_names
    assert chunk.dt == pytest.approx(0.02)
    assert chunk.latency["total"] > 0
    # First action is close to the current state (smooth start).
    assert np.max(np.abs(chunk.actions[0, :6] - sim.joint_positions()[:6])) < 0.05
    assert expert.phase(0.0) == "approach" and expert.phase(100.0) == "done"


def test_closed_loop_episode_succeeds(sim: AlohaSim, embodiment: Embodiment) -> None:
    """Image + joint state only, re-planned every 10 steps through the trajectory executor."""
    expert = TransferCubeExpert(embodiment)
    names = list(embodiment.action_names)
    sim.reset(5)
    expert.reset()
    executor = TrajectoryExecutor(names, sim.joint_positions())
    rewards = []
    for step in range(300):
        if step % 10 == 0:
            chunk = expert.infer(observe(sim))
            tfs = [chunk.dt * (k + 1) for k in range(chunk.horizon)]
            assert executor.accept(chunk.observation_stamp, names, tfs, chunk.actions, sim.time)
        sim.step(executor.target(sim.time + 0.02))
        rewards.append(sim.reward())
        if step == 40:
            est = expert.cube_estimate()
            assert est is not None and np.linalg.norm(est[:2] - sim.object_pose()[:2]) < 0.01
    assert max(rewards) == 4, rewards[::10]
    assert rewards[-1] == 4  # the left arm still holds the cube after the right let go
