"""``qvla-collect --robot vln_nav`` as a user runs it: the installed nav sim, the policy node with the
privileged navigation expert and the recorder, two seeded episodes through ROS 2, converted into a
dataset whose waypoint labels are where the recorded odometry says the base went."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.sim]

pytest.importorskip("rclpy", reason="rclpy not importable: source scripts/env.sh")
pytest.importorskip("mujoco", reason="MuJoCo not installed")

from qvla_core.data.dataset import LeRobotDataset  # noqa: E402
from qvla_core.data.mcap_reader import find_bags  # noqa: E402
from qvla_core.robot_io import load_robot_config  # noqa: E402
from qvla_core.sim.nav.generate import generate_scene  # noqa: E402
from tests.ros.harness import installed_executable  # noqa: E402

SEEDS = (3, 4)


def se2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b: pose b given in the frame of pose a (written out here, not the code under test)."""
    c, s = math.cos(a[2]), math.sin(a[2])
    return np.array([a[0] + c * b[0] - s * b[1], a[1] + s * b[0] + c * b[1], a[2] + b[2]])


def relative(origin: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """pose (in odom) expressed in the frame of origin (in odom)."""
    c, s = math.cos(origin[2]), math.sin(origin[2])
    d = pose[:2] - origin[:2]
    return np.array(
        [c * d[0] + s * d[1], -s * d[0] + c * d[1], math.remainder(pose[2] - origin[2], math.tau)]
    )


def odometry(bag_dir: Path) -> list[tuple[int, np.ndarray]]:
    """(stamp ns, odom pose) of every /odom message in the episode's bag, decoded here."""
    (bag,) = find_bags([bag_dir])
    out = []
    for m in bag.messages(["/odom"], None, None):
        p, q = m.msg.pose.pose.position, m.msg.pose.pose.orientation
        stamp = m.msg.header.stamp.sec * 1_000_000_000 + m.msg.header.stamp.nanosec
        out.append((stamp, np.array([p.x, p.y, 2.0 * math.atan2(q.z, q.w)])))
    return out


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nav") / "collect"
    exe = installed_executable("qvla_ros", "qvla-collect")
    args = ["--robot", "vln_nav", "--seeds", f"{SEEDS[0]}-{SEEDS[1]}", "--out", str(out)]
    proc = subprocess.run(
        [str(exe), *args, "--image-size", "128x96"], capture_output=True, text=True, timeout=420, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_two_expert_episodes_become_a_waypoint_dataset(collected: Path) -> None:
    summary = (collected / "summary.md").read_text()
    assert "expert successes: 2/2" in summary and "frames dropped: 0 " in summary, summary
    config = load_robot_config(collected / "robot.yaml")
    assert config.ros.recording is not None and config.ros.recording.actions.source == "odometry"
    camera = config.embodiment.cameras[0]
    assert (camera.width, camera.height) == (128, 96)
    # One dataset frame per 1 s waypoint step: the history is on that grid, so training sees distinct
    # frames as the policy node will (the shipped YAML's 0.5 s would repeat each one).
    assert (camera.history.frames, camera.history.stride_s) == (8, 1.0)
    ds = LeRobotDataset(collected / "dataset", config.embodiment)
    assert ds.episodes == (0, 1) and all(ds.episode(e).success for e in ds.episodes)
    tasks = [ds[i].observation.instruction for i in (0, len(ds) - 1)]
    assert tasks == [generate_scene(s).instruction for s in SEEDS]  # each scene's own words
    sample = ds[0]
    assert sample.actions.shape == (8, 3) and sample.observation.images["front_camera"].shape[1:] == (
        96,
        128,
        3,
    )
    # Training normalises with the composed waypoints' range: metres ahead, not one step's.
    assert ds.stats["action"]["q99"][0] > 2.0


def test_the_labels_are_where_the_recorded_odometry_went(collected: Path) -> None:
    config = load_robot_config(collected / "robot.yaml")
    ds = LeRobotDataset(collected / "dataset", config.embodiment)
    first = 0
    for episode, seed in zip(ds.episodes, SEEDS, strict=True):
        length = ds.episode(episode).length
        samples = [ds[first + k] for k in range(length)]
        first += length
        # The first waypoint of every frame is its one-step row; chained, the rows are the whole path.
        pose = np.zeros(3)
        for s in samples:
            pose = se2(pose, s.actions[0].astype(np.float64))
        # The base rests at both ends (the policy starts it; the episode ends once it rested), so the
        # bag's odometry at the episode's start and stop gives the same displacement, in base_link at
        # the start, independently of the frames' instants.
        (bag_dir,) = {Path(ds.episode(episode).metadata["source"].split(" (")[0])}
        (span,) = find_bags([bag_dir])[0].episodes()
        odom = odometry(bag_dir)
        at_start = next(p for t, p in odom if t >= span.start_ns)
        at_stop = [p for t, p in odom if t <= span.stop_ns][-1]
        want = relative(at_start, at_stop)[:2]
        assert np.hypot(*(pose[:2] - want)) < 0.05, (seed, pose, want)
        assert math.hypot(*want) > 1.0  # it went somewhere
        # Where it went is the named object: the scene's start composed with the odometry.
        scene = generate_scene(seed)
        end = se2(np.asarray(scene.start, dtype=np.float64), at_stop)
        goal = scene.target_object
        assert math.hypot(goal.x - end[0], goal.y - end[1]) < 1.0, (seed, end, goal)
        # Frame 0's waypoints are the poses the odometry reached 1, 2, 3 ... s later (its instant is
        # the newest image before the start, at most 0.1 s earlier at 10 Hz), in base_link at the
        # start, up to where the label was cut short (rows repeating the one before).
        w = samples[0].actions.astype(np.float64)
        checked = 0
        for j in range(len(w)):
            if j and np.array_equal(w[j], w[j - 1]):
                break
            due = span.start_ns + (j + 1) * 1_000_000_000
            near = [relative(at_start, p) for t, p in odom if due - 160_000_000 <= t <= due + 60_000_000]
            gaps = [
                np.hypot(*(q[:2] - w[j, :2])) + abs(math.remainder(q[2] - w[j, 2], math.tau)) for q in near
            ]
            assert min(gaps) < 0.06, (seed, j, w[j], near)
            checked += 1
        assert checked >= 2, w
