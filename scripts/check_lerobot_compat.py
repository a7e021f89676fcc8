#!/usr/bin/env python3
r"""Check our LeRobot v3.0 datasets against LeRobot's own code, both ways.

1. Our DatasetWriter writes a dataset; LeRobot's ``LeRobotDataset(repo_id, root=...,
   video_backend="torchcodec")`` loads it (plain frames, and with ``delta_timestamps`` for an
   action chunk and a camera history) and its states, actions, indexes, tasks and pixels must be
   what we wrote.
2. LeRobot's writer (``LeRobotDataset.create`` / ``add_frame`` / ``save_episode``, once with H.264
   and once with its default AV1) writes a dataset; our reader must read the same back.

LeRobot does not fit our venv (see docs/datasets.md), so this runs in ours and calls LeRobot in a
separate venv, e.g. built with::

    python3 -m venv /tmp/lerobot-venv
    /tmp/lerobot-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 torchcodec==0.17.0 \
        lerobot-dataset==0.4.4
    apt-get install -y ffmpeg          # torchcodec loads FFmpeg's libraries at import

Run: ``source scripts/env.sh && python scripts/check_lerobot_compat.py --lerobot-python
/tmp/lerobot-venv/bin/python``. Prints one line per check and ``ALL OK``; exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

FPS = 50
JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
NAMES = [f"{side}_{j}" for side in ("left", "right") for j in JOINTS]
CAMERAS = {"cam_high": (96, 128), "cam_low": (96, 128)}
LENGTHS = (40, 53)
TASKS = ("transfer the cube", "hand the cube over")
MAX_MAE = 5.0  # grey levels; yuv420p halves chroma resolution

# Runs in LeRobot's venv: loads a dataset and dumps what LeRobot returns for some samples.
LEROBOT_READ = r"""
import json, sys
import numpy as np
from ledataset.datasets.lerobot_dataset import LeRobotDataset
root, out, indices, cams = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
ds = LeRobotDataset("local/check", root=root, video_backend="torchcodec")
result = {"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "tasks": list(ds.meta.tasks.index),
          "stats_keys": sorted(ds.meta.stats)}
arrays = {}
for i in indices:
    item = ds[i]
    arrays[f"state_{i}"] = item["observation.state"].numpy()
    arrays[f"action_{i}"] = item["action"].numpy()
    for c in cams:
        arrays[f"img_{c}_{i}"] = (item["observation.images." + c].numpy() * 255).round().astype("uint8")
    keys = ("episode_index", "frame_index", "index")
    result[f"meta_{i}"] = [int(item[k]) for k in keys] + [item["task"]]
delta = {"action": [k / ds.fps for k in range(8)], "observation.images." + cams[0]: [-4 / ds.fps, 0.0]}
dd = LeRobotDataset("local/check", root=root, video_backend="torchcodec", delta_timestamps=delta)
last = len(dd) - 3
item = dd[last]
arrays["chunk_action"] = item["action"].numpy()
arrays["chunk_pad"] = item["action_is_pad"].numpy()
arrays["chunk_img"] = (item["observation.images." + cams[0]].numpy() * 255).round().astype("uint8")
result["chunk_index"] = last
np.savez(out + ".npz", **arrays)
json.dump(result, open(out + ".json", "w"))
"""

# Runs in LeRobot's venv: writes a dataset with LeRobot's writer from arrays we made.
LEROBOT_WRITE = r"""
import sys
import numpy as np
from ledataset.datasets.lerobot_dataset import LeRobotDataset
root, src, vcodec = sys.argv[1], sys.argv[2], sys.argv[3]
d = np.load(src)
names = [str(n) for n in d["names"]]
cams = [str(c) for c in d["cams"]]
h, w = d["img_" + cams[0]].shape[1:3]
features = {"observation.state": {"dtype": "float32", "shape": (len(names),), "names": {"motors": names}},
            "action": {"dtype": "float32", "shape": (len(names),), "names": {"motors": names}}}
for c in cams:
    features["observation.images." + c] = {"dtype": "video", "shape": (h, w, 3),
                                           "names": ["height", "width", "channels"]}
ds = LeRobotDataset.create("local/theirs", fps=int(d["fps"]), features=features, root=root,
                           robot_type="aloha", use_videos=True, vcodec=vcodec)
row = 0
for ep, n in enumerate(d["lengths"]):
    for k in range(int(n)):
        frame = {"observation.state": d["state"][row], "action": d["action"][row],
                 "task": str(d["tasks"][ep])}
        for c in cams:
            frame["observation.images." + c] = d["img_" + c][row]
        ds.add_frame(frame)
        row += 1
    ds.save_episode()
ds.finalize()
"""


def image(episode: int, frame: int, camera: int, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(x / 14.0 + frame * 0.3 + episode)
    g = 128 + 90 * np.sin(y / 10.0 - frame * 0.2 + camera)
    b = np.full(x.shape, 40.0 + 30 * camera + 20 * episode)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


class Checks:
    def __init__(self) -> None:
        self.failed = 0

    def __call__(self, ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        self.failed += not ok


def made_up(seed: int = 0) -> dict[str, npt.NDArray[np.generic]]:
    rng = np.random.default_rng(seed)
    n = sum(LENGTHS)
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "state": rng.uniform(-1, 1, (n, len(NAMES))).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, len(NAMES))).astype(np.float32),
        "names": np.array(NAMES),
        "cams": np.array(list(CAMERAS)),
        "tasks": np.array(TASKS),
        "lengths": np.array(LENGTHS),
        "fps": np.array(FPS),
    }
    for i, (cam, size) in enumerate(CAMERAS.items()):
        arrays["img_" + cam] = np.stack(
            [image(e, k, i, size) for e, m in enumerate(LENGTHS) for k in range(m)]
        )
    return arrays


def locate(row: int) -> tuple[int, int]:
    starts = np.cumsum([0, *LENGTHS])
    ep = int(np.searchsorted(starts, row, side="right")) - 1
    return ep, row - int(starts[ep])


def mae(a: npt.NDArray[np.generic], b: npt.NDArray[np.generic]) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


def ours_to_lerobot(
    work: Path, lerobot_python: str, data: dict[str, npt.NDArray[np.generic]], check: Checks
) -> None:
    from qvla_core.data.writer import DatasetWriter

    root = work / "ours"
    with DatasetWriter(
        root, fps=FPS, robot_type="aloha", state_names=NAMES, action_names=NAMES, cameras=CAMERAS
    ) as w:
        row = 0
        for ep, n in enumerate(LENGTHS):
            for k in range(n):
                images = {c: data["img_" + c][row] for c in CAMERAS}
                w.add_frame(
                    state=data["state"][row],
                    action=data["action"][row],
                    images=images,
                    timestamp=3.0 + k / FPS,
                )  # type: ignore[arg-type]
                row += 1
            w.save_episode(TASKS[ep], success=True)
    indices = [0, LENGTHS[0] - 1, LENGTHS[0], sum(LENGTHS) - 1]
    out = work / "lerobot_read"
    cmd = [
        lerobot_python,
        "-c",
        LEROBOT_READ,
        str(root),
        str(out),
        json.dumps(indices),
        json.dumps(list(CAMERAS)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    check(proc.returncode == 0, f"LeRobot loads the dataset our writer made ({root})")
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        return
    result = json.loads(out.with_suffix(".json").read_text())
    got = np.load(out.with_suffix(".npz"))
    check(
        result["len"] == sum(LENGTHS) and result["episodes"] == len(LENGTHS),
        f"frames {result['len']}, episodes {result['episodes']}",
    )
    check(
        result["fps"] == FPS and result["tasks"] == list(TASKS),
        f"fps {result['fps']}, tasks {result['tasks']}",
    )
    check(
        {"observation.state", "action", "observation.images.cam_high"} <= set(result["stats_keys"]),
        "stats.json loaded",
    )
    worst = 0.0
    for i in indices:
        ep, k = locate(i)
        check(
            result[f"meta_{i}"] == [ep, k, i, TASKS[ep]],
            f"sample {i}: episode/frame/index/task {result[f'meta_{i}']}",
        )
        check(
            np.array_equal(got[f"state_{i}"], data["state"][i])
            and np.array_equal(got[f"action_{i}"], data["action"][i]),
            f"sample {i}: state and action exact",
        )
        for c in CAMERAS:
            worst = max(worst, mae(got[f"img_{c}_{i}"].transpose(1, 2, 0), data["img_" + c][i]))
    check(
        worst < MAX_MAE,
        f"pixels through LeRobot's torchcodec decoding: worst mean abs error {worst:.2f} < {MAX_MAE}",
    )
    last = result["chunk_index"]
    ep, k = locate(last)
    rows = [min(last + j, sum(LENGTHS) - 1) for j in range(8)]
    check(
        np.array_equal(got["chunk_action"], data["action"][rows])
        and got["chunk_pad"].tolist() == [False] * 3 + [True] * 5,
        "delta_timestamps action chunk and action_is_pad",
    )
    history = mae(got["chunk_img"][0].transpose(1, 2, 0), data["img_cam_high"][last - 4])
    check(history < MAX_MAE, f"delta_timestamps camera history (4 frames back): mean abs error {history:.2f}")


def lerobot_to_ours(
    work: Path, lerobot_python: str, data: dict[str, npt.NDArray[np.generic]], check: Checks, vcodec: str
) -> None:
    from qvla_core.data.dataset import LeRobotDataset
    from qvla_core.embodiment import load_embodiment

    src = work / "made_up.npz"
    np.savez(src, **data)
    root = work / f"theirs_{vcodec}"
    proc = subprocess.run(
        [lerobot_python, "-c", LEROBOT_WRITE, str(root), str(src), vcodec],
        capture_output=True,
        text=True,
        check=False,
    )
    check(proc.returncode == 0, f"LeRobot's writer made a dataset ({vcodec})")
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        return
    base = load_embodiment(Path(__file__).resolve().parents[1] / "config/robots/aloha.yaml").model_dump(
        mode="json"
    )
    base["cameras"] = [{"name": c, "height": h, "width": w} for c, (h, w) in CAMERAS.items()]
    from qvla_core.embodiment import Embodiment

    robot = Embodiment.model_validate(base)
    ds = LeRobotDataset(root, robot, cache_dir=work / "cache")
    check(
        len(ds) == sum(LENGTHS) and ds.episodes == tuple(range(len(LENGTHS))),
        f"our reader: {len(ds)} frames, episodes {ds.episodes}",
    )
    worst, exact = 0.0, True
    for i in (0, LENGTHS[0] - 1, LENGTHS[0], sum(LENGTHS) - 1):
        s = ds[i]
        ep, k = locate(i)
        exact &= (s.episode_index, s.frame_index, s.observation.instruction) == (ep, k, TASKS[ep])
        exact &= bool(np.array_equal(s.observation.state, data["state"][i]))
        exact &= bool(np.array_equal(s.actions[0], data["action"][i]))
        for c in CAMERAS:
            worst = max(worst, mae(s.observation.images[c][-1], data["img_" + c][i]))
    check(exact, "our reader: episode/frame/task, states and actions exact")
    check(
        worst < MAX_MAE, f"our reader: pixels of LeRobot's {vcodec} videos, worst mean abs error {worst:.2f}"
    )
    check(len(ds.stats["action"]["q01"]) == len(NAMES), "our reader: LeRobot's stats.json")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--lerobot-python", default=os.environ.get("QVLA_LEROBOT_PYTHON", "/tmp/lerobot-venv/bin/python")
    )
    p.add_argument("--keep", type=Path, help="write the datasets here (default: a temporary directory)")
    args = p.parse_args()
    if not Path(args.lerobot_python).is_file():
        print(
            f"{args.lerobot_python}: no such interpreter; build LeRobot's venv first "
            "(see this script's docstring)"
        )
        return 2
    data = made_up()
    check = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ours_to_lerobot(work, args.lerobot_python, data, check)
        for vcodec in ("h264", "libsvtav1"):
            lerobot_to_ours(work, args.lerobot_python, data, check, vcodec)
    print("ALL OK" if check.failed == 0 else f"{check.failed} check(s) FAILED")
    return 0 if check.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
