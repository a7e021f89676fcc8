"""The MuJoCo ALOHA wrapper: reset, stepping, rendering, reward."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim

pytest.importorskip(
    "gym_aloha", reason="gym-aloha (MuJoCo ALOHA model) not installed: pip install gym-aloha==0.1.5"
)

from qvla_core.sim.aloha_env import AlohaSim  # noqa: E402


@pytest.fixture(scope="module")
def sim() -> AlohaSim:
    return AlohaSim(width=160, height=120)


def test_reset_is_deterministic_and_matches_gym_aloha(sim: AlohaSim) -> None:
    from gym_aloha.utils import sample_box_pose

    sim.reset(3)
    a = sim.object_pose()
    np.testing.assert_allclose(a, sample_box_pose(3))
    sim.step(sim.joint_positions())
    sim.reset(3)
    np.testing.assert_allclose(sim.object_pose(), a)
    assert sim.time == 0.0
    sim.reset(4)
    assert not np.allclose(sim.object_pose(), a)
    q = sim.joint_positions()
    assert q.shape == (14,)
    np.testing.assert_allclose(q[[0, 1, 2, 7, 8, 9]], [0, -0.96, 1.16, 0, -0.96, 1.16])
    assert 0.0 <= q[6] <= 1.0 and 0.0 <= q[13] <= 1.0
    assert sim.reward() == 0 and not sim.success()


def test_step_moves_joints_toward_targets(sim: AlohaSim) -> None:
    sim.reset(0)
    q0 = sim.joint_positions()
    delta = np.zeros(14)
    delta[[0, 1, 2, 7, 9, 11]] = [0.3, -0.2, 0.25, -0.3, -0.2, 0.3]
    delta[6] = 0.8  # left gripper opens
    delta[13] = 0.6
    target = q0 + delta
    for _ in range(50):
        sim.step(target)
    moved = sim.joint_positions() - q0
    assert sim.time == pytest.approx(1.0)
    for j in np.flatnonzero(delta):
        assert np.sign(moved[j]) == np.sign(delta[j]), (j, moved[j], delta[j])
        assert abs(moved[j]) > 0.6 * abs(delta[j]), (j, moved[j], delta[j])
    with pytest.raises(ValueError, match="14"):
        sim.step(np.zeros(13))


def test_render_shapes_only_requested_cameras(sim: AlohaSim) -> None:
    sim.reset(0)
    images = sim.render(["cam_high", "cam_right_wrist"])
    assert set(images) == {"cam_high", "cam_right_wrist"}
    for img in images.values():
        assert img.shape == (120, 160, 3) and img.dtype == np.uint8
        assert img.std() > 5  # not blank
    assert set(sim.render()) == {"cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"}
    with pytest.raises(ValueError, match="unknown cameras"):
        sim.render(["nope"])


def test_reward_from_constructed_state(sim: AlohaSim) -> None:
    """Cube on the table and untouched: 0; in the air between the left fingers: 4, held when closed."""
    import mujoco

    sim.reset(0)
    assert sim.reward() == 0 and not sim.success()
    fingers = [
        mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_GEOM, f"vx300s_left/10_{side}_gripper_finger")
        for side in ("left", "right")
    ]
    sim.data.qpos[-7:-4] = sim.data.geom_xpos[fingers].mean(axis=0)  # cube (free joint) between them
    mujoco.mj_forward(sim.model, sim.data)
    assert sim.object_pose()[2] > 0.1  # in the air
    assert sim.reward() == 4 and sim.success()
    closed = sim.joint_positions()
    closed[6] = 0.0
    for _ in range(15):
        sim.step(closed)
    assert sim.success()
    assert sim.object_pose()[2] > 0.1
