"""The navigation scenes and the MuJoCo base: determinism, collisions, odometry, the camera."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from qvla_core.sim.nav.controller import relative
from qvla_core.sim.nav.generate import OBJECT_WALL_CLEARANCE, START_TARGET_DISTANCE, generate_scene
from qvla_core.sim.nav.planner import OccupancyGrid
from qvla_core.sim.nav.scene import BASE_RADIUS, COLOURS

pytestmark = pytest.mark.sim
pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install mujoco")

from qvla_core.sim.nav.env import CONTROL_DT, NavSim  # noqa: E402


@pytest.fixture(scope="module")
def sim() -> Iterator[NavSim]:
    s = NavSim(width=96, height=72)
    yield s
    s.close()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 17, 123])
def test_scenes_are_deterministic_valid_and_named(seed: int) -> None:
    a, b = generate_scene(seed), generate_scene(seed)
    assert a == b
    assert a != generate_scene(seed + 1000)
    kinds = [(o.colour, o.shape) for o in a.objects]
    assert len(set(kinds)) == len(kinds) >= 3  # distinct colour x shape
    assert a.instruction == f"go to the {a.target_object.colour} {a.target_object.shape}"
    assert a.find_object(a.instruction) is a.target_object
    assert a.find_object("Go to the PURPLE box.") is None
    for o in a.objects:
        assert a.wall_distance(o.x, o.y) >= o.radius + OBJECT_WALL_CLEARANCE - 1e-9
    x, y, _ = a.start
    assert a.wall_distance(x, y) > BASE_RADIUS
    goal = a.target_object
    assert math.hypot(goal.x - x, goal.y - y) >= START_TARGET_DISTANCE
    assert OccupancyGrid.from_scene(a).all_reachable(a, 1.0)


def test_scenes_vary_rooms_and_corridors() -> None:
    scenes = [generate_scene(s) for s in range(30)]
    assert len({len(s.walls) for s in scenes}) > 3
    assert len({s.instruction for s in scenes}) > 8
    sizes = {(round(s.bounds.xmax), round(s.bounds.ymax)) for s in scenes}
    assert len(sizes) > 5
    with pytest.raises(ValueError, match="seed"):
        generate_scene(-1)
    with pytest.raises(RuntimeError, match="reset"):
        NavSim(32, 24).step(0.0, 0.0)


def test_reset_and_stepping_are_deterministic(sim: NavSim) -> None:
    def run() -> tuple[tuple[float, float, float], np.ndarray]:
        sim.reset(5)
        for k in range(40):
            sim.step(0.5, 0.4 * math.sin(0.1 * k))
        return sim.pose(), sim.render()

    (pa, ia), (pb, ib) = run(), run()
    assert pa == pb
    np.testing.assert_array_equal(ia, ib)
    assert sim.time == pytest.approx(40 * CONTROL_DT)
    sim.reset(6)
    assert sim.pose() != pa


def test_differential_drive_odometry_and_pose_history(sim: NavSim) -> None:
    scene = sim.reset(7)
    assert sim.pose() == pytest.approx(scene.start)
    assert sim.odom_pose() == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)
    sim.set_pose((*scene.start[:2], 0.0))  # facing world +x
    for _ in range(20):
        sim.step(0.0, 1.0)  # turn in place, counter-clockwise
    assert sim.pose()[2] == pytest.approx(1.0, abs=0.05)
    vx, vy, wz = sim.twist()
    assert wz == pytest.approx(1.0, abs=0.05) and abs(vx) < 0.02 and abs(vy) < 0.02
    # The pose history interpolates between control steps.
    mid = sim.pose_at(0.5)
    assert mid[2] == pytest.approx(0.5, abs=0.06)
    odom = sim.odom_pose()
    np.testing.assert_allclose(odom, relative(scene.start, [sim.pose()])[0], atol=1e-9)


def _facing_east_wall(sim: NavSim, seed: int) -> tuple[float, float]:
    """Put the base 0.6 m from the east wall's face, facing it; returns (wall face x, y)."""
    scene = sim.reset(seed)
    face = scene.bounds.xmax - 0.1 - 0.05
    y = next(
        yy
        for yy in np.linspace(scene.bounds.ymin + 1.0, scene.bounds.ymax - 1.0, 50)
        if scene.wall_distance(face - 0.6, yy) > 0.55
    )
    sim.set_pose((face - 0.6, float(y), 0.0))
    return face, float(y)


def test_walls_stop_the_base_and_contacts_are_counted(sim: NavSim) -> None:
    face, _ = _facing_east_wall(sim, 11)
    assert sim.collisions == 0 and not sim.in_collision()
    xs = []
    for _ in range(60):  # 3 s at 0.5 m/s: 1.5 m into a wall 0.38 m away
        sim.step(0.5, 0.0)
        xs.append(sim.pose()[0])
    assert sim.in_collision()
    assert sim.collisions == 1  # one contact onset, however long it lasts
    assert max(xs) < face - BASE_RADIUS + 0.03  # it does not pass through
    for _ in range(40):
        sim.step(0.0, 1.5)  # turn away
    for _ in range(20):
        sim.step(0.5, 0.0)
    assert not sim.in_collision() and sim.collisions == 1


def test_speed_is_clipped_to_the_base_limits(sim: NavSim) -> None:
    sim.reset(3)
    sim.step(5.0, 0.0)
    assert sim.twist()[0] <= sim.limits.max_speed + 1e-3
    with pytest.raises(ValueError, match="finite"):
        sim.step(math.nan, 0.0)


def _colour_mask(image: np.ndarray, colour: str) -> np.ndarray:
    """Pixels whose hue matches an object colour (normalised by brightness, so shading does not matter)."""
    rgb = image.astype(np.float64)
    hue = rgb / np.maximum(rgb.max(axis=2, keepdims=True), 1.0)
    ref = np.asarray(COLOURS[colour]) / max(COLOURS[colour])
    return np.all(np.abs(hue - ref) < 0.25, axis=2) & (rgb.max(axis=2) > 60)


@pytest.mark.parametrize("seed", [2, 9])
def test_camera_looks_forward_along_base_x(sim: NavSim, seed: int) -> None:
    scene = sim.reset(seed)
    obj = scene.target_object
    grid = OccupancyGrid.from_scene(scene)
    # A free spot 2 m from the object with a clear line of sight to it.
    for angle in np.linspace(-math.pi, math.pi, 36, endpoint=False):
        x, y = obj.x + 2.0 * math.cos(angle), obj.y + 2.0 * math.sin(angle)
        near = (obj.x + 0.5 * math.cos(angle), obj.y + 0.5 * math.sin(angle))
        if grid.is_free(x, y) and grid.line_free((x, y), near):
            break
    else:
        pytest.fail("no free viewpoint around the object")
    towards = math.atan2(obj.y - y, obj.x - x)
    sim.set_pose((x, y, towards))
    seen = _colour_mask(sim.render(), obj.colour)
    sim.set_pose((x, y, towards + math.pi))
    behind = _colour_mask(sim.render(), obj.colour)
    assert seen.mean() > 0.01 > behind.mean()
    # In the middle when faced; turned left (CCW) the object moves to the image's right.
    assert abs(np.nonzero(seen)[1].mean() - seen.shape[1] / 2) < seen.shape[1] / 8
    sim.set_pose((x, y, towards + 0.5))
    cols = np.nonzero(_colour_mask(sim.render(), obj.colour))[1]
    assert len(cols) > 0 and cols.mean() > seen.shape[1] * 0.6
