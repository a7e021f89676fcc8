"""Does a learned navigation policy heed the instruction? Same image, another object named.

For poses in held-out scenes (seeds from ``--first-seed``) where two or more objects are in the
camera's view (a clear line of sight, within ``--max-range`` m, at least ``--min-separation`` degrees
apart in bearing), the policy sees the same camera frame (repeated over its history, as at an
episode's start) twice: with the instruction naming one visible object, then another. The flow
starts from the same noise for both. Its chunk's heading is the bearing of the first waypoint at
least 0.5 m away (or of the last one); a chunk "heads for" the visible object nearest that bearing.

Reported: how often the chunk heads for the named object (an instruction-blind policy that picks
one object per image scores 50% on pairs; one that heeds the words, 100%), how often the two chunks
head for different objects, and the mean change of heading between them. Prints a markdown table;
``--out`` also writes it.

Run (from the repository root)::

    MUJOCO_GL=egl python bench/nav_grounding_probe.py --checkpoint models/vln_nav_go_to \\
        --robot models/vln_nav_go_to/robot.yaml
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from success_stats import wilson  # noqa: E402


def visible_objects(scene, opaque, pose, max_range: float):  # type: ignore[no-untyped-def]
    from qvla_core.sim.nav.metrics import HALF_FOV, in_sight

    out = []
    for obj in scene.objects:
        if math.hypot(obj.x - pose[0], obj.y - pose[1]) > max_range:
            continue
        if in_sight(opaque, pose, obj, HALF_FOV) == "in view":
            out.append(obj)
    return out


def bearing(obj, pose) -> float:  # type: ignore[no-untyped-def]
    from qvla_core.sim.nav.controller import wrap

    return wrap(math.atan2(obj.y - pose[1], obj.x - pose[0]) - pose[2])


def chunk_heading(actions: np.ndarray) -> float:
    far = np.flatnonzero(np.hypot(actions[:, 0], actions[:, 1]) >= 0.5)
    k = int(far[0]) if len(far) else len(actions) - 1
    return math.atan2(float(actions[k, 1]), float(actions[k, 0]))


def main() -> int:
    import torch

    from qvla_core.embodiment import load_embodiment
    from qvla_core.model.policy import QwenVLAPolicy
    from qvla_core.policy import Observation
    from qvla_core.sim.nav.controller import wrap
    from qvla_core.sim.nav.env import NavSim
    from qvla_core.sim.nav.planner import OccupancyGrid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", action="append", required=True, help="repeatable")
    ap.add_argument("--robot", required=True, help="robot YAML (the checkpoints' camera size and history)")
    ap.add_argument("--pairs", type=int, default=200, help="image + two instructions, this many")
    ap.add_argument("--first-seed", type=int, default=10000)
    ap.add_argument("--max-range", type=float, default=5.0)
    ap.add_argument("--min-separation", type=float, default=20.0, help="degrees between the two objects")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    emb = load_embodiment(args.robot)
    cam = emb.cameras[0]
    sim = NavSim(cam.width, cam.height)
    rng = np.random.default_rng(0)
    probes = []  # (image, pose, objects a, b, scene)
    seed = args.first_seed
    while len(probes) < args.pairs:
        scene = sim.reset(seed)
        grid = OccupancyGrid.from_scene(scene)
        opaque = OccupancyGrid.from_scene(scene, inflation=0.0)
        free = np.argwhere(grid.free)
        for _ in range(40):
            i, j = free[int(rng.integers(len(free)))]
            x, y = grid.centre(int(i), int(j))
            pose = (x, y, float(rng.uniform(-math.pi, math.pi)))
            seen = visible_objects(scene, opaque, pose, args.max_range)
            pairs = [
                (a, b)
                for a, b in itertools.combinations(seen, 2)
                if abs(wrap(bearing(a, pose) - bearing(b, pose))) >= math.radians(args.min_separation)
            ]
            if pairs:
                a, b = pairs[int(rng.integers(len(pairs)))]
                sim.set_pose(pose)
                probes.append((np.ascontiguousarray(sim.render()), pose, seen, a, b))
                break
        seed += 1
    sim.close()

    lines = [
        "| checkpoint | heads for the named object [95% CI] | the two chunks' targets differ "
        "| mean heading change |",
        "|---|---|---|---|",
    ]
    for ckpt in args.checkpoint:
        policy = QwenVLAPolicy.from_checkpoint(ckpt, emb, seed=0)
        right = differ = 0
        change = []
        for image, pose, seen, a, b in probes:
            headings = []
            for named in (a, b):
                policy.reset()  # the same noise for both instructions
                obs = Observation(
                    images={cam.name: np.stack([image] * cam.history.frames)},
                    state=np.zeros(0, np.float32),
                    instruction=f"go to the {named.colour} {named.shape}",
                    stamp=0.0,
                )
                heading = chunk_heading(policy.infer(obs).actions)
                target = min(seen, key=lambda o, h=heading: abs(wrap(bearing(o, pose) - h)))
                right += target is named
                headings.append((heading, target))
            differ += headings[0][1] is not headings[1][1]
            change.append(abs(wrap(headings[0][0] - headings[1][0])))
        n = 2 * len(probes)
        lo, hi = wilson(right, n)
        lines.append(
            f"| `{ckpt}` | {right}/{n} = {right / n:.0%} [{lo:.0%}, {hi:.0%}] | "
            f"{differ}/{len(probes)} = {differ / len(probes):.0%} "
            f"| {math.degrees(float(np.mean(change))):.0f} deg |"
        )
    text = (
        f"{len(probes)} held-out images (seeds from {args.first_seed}) with 2+ objects in view within "
        f"{args.max_range:g} m, {args.min_separation:g}+ degrees apart; each with two instructions.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
