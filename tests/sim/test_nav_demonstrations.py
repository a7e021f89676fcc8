"""Navigation demonstrations straight from the sim (qvla_core.sim.nav.demonstrations and
bench/nav_demonstrations.py): the labels are the ones qvla-convert would write from the same drive's
odometry, each phase is a 1 Hz episode, and the written dataset reads back as training samples whose
waypoints are where the base went."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from qvla_core.data.waypoints import WaypointLayout, relative
from qvla_core.embodiment import load_embodiment

mujoco = pytest.importorskip("mujoco", reason="MuJoCo not installed: pip install mujoco")

REPO = Path(__file__).resolve().parents[2]
EMB = load_embodiment(REPO / "config" / "robots" / "vln_nav.yaml")


@pytest.fixture(scope="module")
def drive_41():  # type: ignore[no-untyped-def]
    from qvla_core.sim.nav.demonstrations import drive
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.expert import NavExpert

    sim = NavSim(32, 24)
    try:
        yield drive(sim, NavExpert(EMB, ground_truth=sim), 41, phases=4)
    finally:
        sim.close()


@pytest.mark.sim
def test_one_drive_gives_phase_shifted_1hz_episodes(drive_41) -> None:  # type: ignore[no-untyped-def]
    d = drive_41
    assert d.success and d.collisions == 0
    assert [ep.phase for ep in d.episodes] == [0, 1, 2, 3]
    assert [ep.start_s for ep in d.episodes] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    lengths = [len(ep.images) for ep in d.episodes]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 4
    for ep in d.episodes:
        assert ep.images[0].shape == (24, 32, 3) and ep.images[0].dtype == np.uint8
        assert ep.actions.shape == (len(ep.images), 3) and ep.poses.shape == (len(ep.images), 3)
        # Frames 1 s apart: the base (<= 0.8 m/s) moves at most that far between two of them.
        steps = np.hypot(*np.diff(ep.poses[:, :2], axis=0).T)
        assert np.all(steps <= 0.85)
    # Phases interleave: phase 1's first frame lies between phase 0's first two.
    p0, p1 = d.episodes[0].poses, d.episodes[1].poses
    assert math.dist(p0[0, :2], p1[0, :2]) <= math.dist(p0[0, :2], p0[1, :2]) + 1e-9


@pytest.mark.sim
def test_labels_compose_into_where_the_base_went(drive_41) -> None:  # type: ignore[no-untyped-def]
    layout = WaypointLayout(EMB)
    for ep in drive_41.episodes:
        for k in range(len(ep.images) - 1):
            # The one-step row is the next frame's pose in base_link at this frame (REP-103).
            want = relative(ep.poses[k], ep.poses[k + 1 : k + 2])[0]
            assert ep.actions[k] == pytest.approx(want, abs=1e-5)
            # The reader's chunk of frame k: the poses of frames k+1.. in base_link at frame k.
            chunk = layout.chunk(ep.actions[k:], EMB.horizon)
            future = relative(ep.poses[k], ep.poses[k + 1 : k + 1 + EMB.horizon])
            # Up to the first waypoint beyond the embodiment's limits (x >= -1 m: well behind the base
            # once it turned round); from there on the last one inside repeats.
            inside = [not layout.outside(p) for p in future] + [False]
            n = inside.index(False)
            assert np.allclose(chunk[:n, :2], future[:n, :2], atol=1e-4)
            if 0 < n < len(future):
                assert np.allclose(chunk[n:, :2], future[n - 1, :2], atol=1e-4)
    # The drive ends at rest near the named object: the last rows say "stay".
    last = drive_41.episodes[0].actions[-1]
    assert abs(last[0]) < 0.1 and abs(last[1]) < 0.1


@pytest.mark.sim
def test_phases_must_divide_the_waypoint_period() -> None:
    from qvla_core.sim.nav.demonstrations import drive
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.expert import NavExpert

    sim = NavSim(32, 24)
    try:
        with pytest.raises(ValueError, match="phases must divide the 20 control steps"):
            drive(sim, NavExpert(EMB, ground_truth=sim), 41, phases=3)
    finally:
        sim.close()


@pytest.mark.sim
def test_the_bench_writes_a_dataset_training_reads(tmp_path: Path) -> None:
    from qvla_core.data.dataset import LeRobotDataset
    from qvla_core.robot_io import load_robot_config

    path = REPO / "bench" / "nav_demonstrations.py"
    spec = importlib.util.spec_from_file_location("nav_demonstrations", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "demos"
    argv = [
        "--seeds",
        "41-42",
        "--out",
        str(out),
        "--image-size",
        "32x24",
        "--phases",
        "2",
        "--history-frames",
        "3",
    ]
    assert bench.main(argv) == 0
    config = load_robot_config(out / "robot.yaml")
    cam = config.embodiment.cameras[0]
    assert (cam.width, cam.height, cam.history.stride_s, cam.history.frames) == (32, 24, 1.0, 3)
    ds = LeRobotDataset(out / "dataset", config.embodiment)
    assert len(ds.episodes) == 4 and ds.fps == 1.0
    sample = ds[0]
    assert sample.observation.instruction.startswith("go to the ")
    assert sample.observation.images[cam.name].shape == (cam.history.frames, 24, 32, 3)
    assert sample.actions.shape == (config.embodiment.horizon, 3)
    assert np.all(np.isfinite(sample.actions))
    assert "expert stopped within 1 m of the named object in 2" in (out / "summary.md").read_text()


@pytest.mark.sim
def test_perturbed_drives_are_cut_at_each_jump() -> None:
    from qvla_core.sim.nav.demonstrations import drive
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.expert import NavExpert

    sim = NavSim(32, 24)
    try:
        d = drive(sim, NavExpert(EMB, ground_truth=sim), 41, phases=2, perturb_every_s=2.0)
    finally:
        sim.close()
    assert d.success  # the expert gets back on course and still arrives
    starts = [ep.poses[0] for ep in d.episodes if ep.phase == 0]
    assert len(starts) >= 3  # a first stretch and at least two after a jump
    for ep in d.episodes:
        # Within an episode the odometry is continuous (no jump inside) and the labels are its steps.
        steps = np.hypot(*np.diff(ep.poses[:, :2], axis=0).T) if len(ep.poses) > 1 else np.zeros(0)
        assert np.all(steps <= 0.85)
        for k in range(len(ep.poses) - 1):
            assert ep.actions[k] == pytest.approx(relative(ep.poses[k], ep.poses[k + 1 : k + 2])[0], abs=1e-5)
