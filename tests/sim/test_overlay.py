"""Drawing a predicted chunk into a camera image: the projection must land where the scene is."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip("gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed")

from qvla_core.sim.aloha_env import AlohaSim  # noqa: E402
from qvla_core.sim.overlay import ChunkProjector  # noqa: E402

W, H = 320, 240


@pytest.fixture(scope="module")
def projector() -> ChunkProjector:
    return ChunkProjector("top")


def red_centroid(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((r > 100) & (r > 2 * g + 30) & (r > 2 * b + 30))
    assert rows.size > 4, "the cube is not in view"
    return np.array([cols.mean(), rows.mean()])


@pytest.mark.parametrize("seed", [0, 7])
def test_the_cube_projects_onto_its_pixels(projector: ChunkProjector, seed: int) -> None:
    sim = AlohaSim(cameras={"cam_high": "top"}, width=W, height=H)
    try:
        sim.reset(seed)
        for _ in range(25):  # let the cube settle on the table
            sim.step(sim.joint_positions())
        image = sim.render(["cam_high"])["cam_high"]
        cube = sim.object_pose()[:3] + np.array([0.0, 0.0, 0.02])  # top face: what the camera sees
    finally:
        sim.close()
    uv = projector.project(cube, W, H)
    assert np.linalg.norm(uv - red_centroid(image)) < 3.0, (uv, red_centroid(image))


def test_paths_follow_the_rows_and_drawing_changes_only_a_copy(projector: ChunkProjector) -> None:
    start = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0, 0.5] * 2)
    rows = np.tile(start, (10, 1))
    rows[:, 0] = np.linspace(0.0, 0.5, 10)  # left waist turns: the left grasp point sweeps sideways
    paths = projector.gripper_paths(rows)
    assert paths.shape == (2, 10, 3)
    assert np.linalg.norm(paths[0, -1] - paths[0, 0]) > 0.1  # the left gripper moved
    np.testing.assert_allclose(paths[1], np.repeat(paths[1, :1], 10, axis=0), atol=1e-9)  # right did not
    image = np.zeros((H, W, 3), np.uint8)
    drawn = projector.draw(image, rows)
    assert image.max() == 0 and drawn.max() > 0
    with pytest.raises(ValueError, match="14"):
        projector.gripper_paths(np.zeros((3, 7)))
