"""Navigation expert demonstrations straight from the sim into a LeRobot v3.0 dataset (no ROS).

``qvla-collect --robot vln_nav`` records through ROS 2 at ~8 s a scene; this drives the same expert
in the same sim in one process (~0.4 s a scene) and labels the frames as qvla-convert does
(qvla_core.sim.nav.demonstrations), with ``--phases`` shifted 1 Hz episodes per drive. Leaves in
``--out``: ``robot.yaml`` (vln_nav at ``--image-size``, the camera history on the 1 s grid, as
qvla-collect writes it), ``dataset/`` and ``summary.md``. Drives where the expert did not stop within
1 m of the named object are left out (and counted).

Run (from the repository root)::

    MUJOCO_GL=egl python bench/nav_demonstrations.py --seeds 20000-21999 --out runs/nav/d2000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm  # type: ignore[import-untyped]

    from qvla_core.data.writer import DatasetWriter
    from qvla_core.robot_io import load_robot_config
    from qvla_core.sim.nav.demonstrations import drive
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.expert import NavExpert
    from qvla_core.sim.nav.search import SearchingExpert
    from qvla_ros.tools.bringup import write_robot_variant
    from qvla_ros.tools.collect import seeds_arg, size_arg
    from qvla_ros.tools.collect_nav import history_on_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=seeds_arg, required=True, help="scene seeds, e.g. 20000-21999")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--robot", type=Path, default=ROOT / "config" / "robots" / "vln_nav.yaml")
    ap.add_argument("--image-size", type=size_arg, default=(128, 96), help="WxH (default 128x96)")
    ap.add_argument(
        "--history-frames", type=int, default=0, help="camera history frames in robot.yaml (0: the --robot's)"
    )
    ap.add_argument("--phases", type=int, default=4, help="episodes per drive, frames shifted 1/phases s")
    ap.add_argument("--max-time", type=float, default=60.0, help="drive limit [s of sim time]")
    ap.add_argument(
        "--perturb-every",
        type=float,
        default=0.0,
        help="mean seconds between perturbations of the base's pose (0: none; see demonstrations.py)",
    )
    ap.add_argument(
        "--expert",
        choices=("shortest", "search"),
        default="shortest",
        help="shortest: NavExpert (knows where the object is); search: SearchingExpert (looks for it)",
    )
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    robot_yaml = write_robot_variant(
        args.robot,
        args.out / "robot.yaml",
        camera_size=args.image_size,
        history_frames=args.history_frames or None,
    )
    history_on_grid(robot_yaml)
    emb = load_robot_config(robot_yaml).embodiment
    cam = emb.cameras[0]
    sim = NavSim(cam.width, cam.height)
    expert = (SearchingExpert if args.expert == "search" else NavExpert)(emb, ground_truth=sim)
    failed: list[int] = []
    episodes = frames = 0
    sim_s = 0.0
    t0 = time.monotonic()
    try:
        with DatasetWriter.for_embodiment(args.out / "dataset", emb, overwrite=args.overwrite) as writer:
            for seed in tqdm(args.seeds, unit="scene", desc="nav demonstrations"):
                result = drive(
                    sim,
                    expert,
                    seed,
                    phases=args.phases,
                    max_time_s=args.max_time,
                    perturb_every_s=args.perturb_every,
                )
                sim_s += result.sim_time
                if not result.success:
                    failed.append(seed)
                    continue
                for ep in result.episodes:
                    for k, (image, row) in enumerate(zip(ep.images, ep.actions, strict=True)):
                        writer.add_frame(
                            state=np.zeros(0, np.float32),
                            action=row,
                            images={cam.name: image},
                            timestamp=k / emb.control_rate_hz,
                        )
                    writer.save_episode(
                        ep.instruction,
                        success=True,
                        metadata={"source": f"nav sim seed {seed} phase {ep.phase}", "start_s": ep.start_s},
                    )
                    episodes += 1
                    frames += len(ep.images)
            writer.finalize()
    finally:
        sim.close()
    wall = time.monotonic() - t0
    text = (
        f"# Navigation demonstrations (bench/nav_demonstrations.py)\n\n"
        f"Command: `python bench/nav_demonstrations.py {' '.join(argv or sys.argv[1:])}`\n\n"
        f"- scenes: {len(args.seeds)} (seeds {args.seeds[0]}..{args.seeds[-1]}); the expert stopped "
        f"within 1 m of the named object in {len(args.seeds) - len(failed)} (left out: {failed[:20]})\n"
        f"- episodes: {episodes} ({args.phases} per stretch between perturbations, mean "
        f"{args.perturb_every:g} s apart; 0 = none), frames: {frames}, "
        f"{cam.width}x{cam.height}, {emb.control_rate_hz:g} Hz\n"
        f"- {wall:.0f} s wall for {sim_s:.0f} s of sim time\n"
    )
    (args.out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
