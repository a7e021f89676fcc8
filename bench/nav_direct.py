"""The navigation expert and the chance baseline, run directly on the navigation sim (no ROS).

Each policy gets one observation per second of sim time (the vln_nav YAML's inference period) and
returns 8 waypoints in base_link; the local controller (what Nav2's controller does on a robot)
drives the base through them at 20 Hz. Episodes end when the base has been at rest for 2 s or after
``--max-time`` s. The scenes are held-out seeds (``--first-seed``, default 10000: far from the
seeds tests use). Metrics as VLN papers report them (see qvla_core.sim.nav.metrics).

Run (from the repository root)::

    MUJOCO_GL=egl PYTHONPATH=src/qvla_core python bench/nav_direct.py --seeds 50

``--render`` also renders the 640x480 camera history the YAML declares for every observation (the
expert does not look at it; this measures what rendering costs). ``--checkpoint DIR`` adds a learned
policy (QwenVLAPolicy on the CPU, 1 sample per observation, the sim paused while it infers: a quick
check between training runs; bench/nav_closed_loop.py measures it through ROS 2 at real time) with
the camera of ``--robot``. It prints a markdown table and writes it to ``--out`` (default
docs/bench/nav_direct.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from qvla_core.embodiment import load_embodiment
from qvla_core.policy import Policy
from qvla_core.sim.nav.env import NavSim
from qvla_core.sim.nav.episode import EpisodeLog, run_episode
from qvla_core.sim.nav.expert import NavExpert, RandomObjectBaseline
from qvla_core.sim.nav.metrics import LEGEND, TABLE_HEADER, summarize, table_row
from qvla_core.sim.nav.search import SearchingExpert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from success_stats import wilson  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50, help="number of held-out scenes")
    ap.add_argument("--first-seed", type=int, default=10000)
    ap.add_argument("--max-time", type=float, default=90.0, help="episode limit [s of sim time]")
    ap.add_argument("--render", action="store_true", help="render the camera history too (slower)")
    ap.add_argument("--robot", default=str(ROOT / "config" / "robots" / "vln_nav.yaml"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "nav_direct.md"))
    ap.add_argument("--checkpoint", default="", help="also a learned policy: this checkpoint directory")
    ap.add_argument("--no-expert", action="store_true")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument(
        "--search", action="store_true", help="also the searching expert (sees the object before it goes)"
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads for the learned policy (0: torch's)"
    )
    args = ap.parse_args()

    embodiment = load_embodiment(args.robot)
    cam = embodiment.cameras[0]
    sim = NavSim(cam.width, cam.height)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = []
    logs: dict[str, list[EpisodeLog]] = {}
    policies: list[tuple[str, Policy, bool]] = []
    if not args.no_expert:
        policies.append(
            ("expert (A*/Dijkstra on the map)", NavExpert(embodiment, ground_truth=sim), args.render)
        )
    if args.search:
        policies.append(
            (
                "searching expert (the map, not where the object is)",
                SearchingExpert(embodiment, ground_truth=sim),
                args.render,
            )
        )
    if not args.no_baseline:
        baseline = RandomObjectBaseline(embodiment, ground_truth=sim)
        policies.append(("chance (walks to a random object)", baseline, args.render))
    if args.checkpoint:
        import torch

        from qvla_core.model.policy import QwenVLAPolicy

        if args.threads:
            torch.set_num_threads(args.threads)
        learned = QwenVLAPolicy.from_checkpoint(args.checkpoint, embodiment, seed=0)
        policies.append((f"learned (`{args.checkpoint}`)", learned, True))
    try:
        for name, policy, render in policies:
            t0 = time.perf_counter()
            logs[name] = []
            for seed in seeds:
                log = run_episode(sim, policy, seed, max_time_s=args.max_time, render=render)
                logs[name].append(log)
                m = log.metrics
                print(
                    f"{name} seed {seed}: success {m.success}, NE {m.navigation_error:.2f} m, "
                    f"wrong object {m.wrong_object}, collisions {m.collisions}",
                    flush=True,
                )
            wall = time.perf_counter() - t0
            sim_s = sum(log.sim_time for log in logs[name])
            renders = sum(log.render_s for log in logs[name])
            s = summarize([log.metrics for log in logs[name]])
            rows.append((name, s, wall, sim_s, renders))
            failed = [log.seed for log in logs[name] if not log.metrics.success]
            print(f"{name}: failed seeds {failed}", flush=True)
    finally:
        sim.close()

    lines = [
        "# Navigation experts and chance baseline, directly on the sim (no ROS)",
        "",
        f"{args.seeds} held-out scenes (seeds {seeds[0]}..{seeds[-1]}), success radius 1 m, "
        f"{platform.processor() or platform.machine()}, render={args.render}. Command: "
        f"`python bench/nav_direct.py {' '.join(sys.argv[1:])}`.",
        "",
        *TABLE_HEADER,
    ]
    legend = ["", LEGEND]
    lines += [table_row(name, s) for name, s, _, _, _ in rows]
    lines += ["", *visibility_table(logs, seeds), ""]
    for name, _, wall, sim_s, renders in rows:
        extra = f", rendering {renders:.1f} s" if args.render else ""
        lines.append(
            f"{name}: {wall:.1f} s wall for {sim_s:.0f} s of sim time ({sim_s / wall:.1f}x real time{extra})."
        )
    text = "\n".join(lines + legend) + "\n"
    print("\n" + text)
    Path(args.out).write_text(text)


def visibility_table(logs: dict[str, list[EpisodeLog]], seeds: list[int]) -> list[str]:
    """Success by where the named object is from the start (metrics.target_visibility), with Wilson
    95% intervals: a policy that only reacts to what it sees can succeed where the object is in view
    or a turn away, and has to search where it is hidden."""
    from qvla_core.sim.nav.generate import generate_scene
    from qvla_core.sim.nav.metrics import target_visibility

    where = {s: target_visibility(generate_scene(s)) for s in seeds}
    classes = ("in view", "turn to see", "hidden")
    counts = {c: sum(1 for s in seeds if where[s] == c) for c in classes}
    head = " | ".join(f"{c} ({counts[c]} scenes)" for c in classes)
    out = [f"| success by the named object at the start | {head} |", "|---|" + "---|" * len(classes)]
    for name, episodes in logs.items():
        cells = []
        for c in classes:
            n = counts[c]
            k = sum(1 for log in episodes if where[log.seed] == c and log.metrics.success)
            if n:
                lo, hi = wilson(k, n)
                cells.append(f"{k}/{n} [{lo:.0%}, {hi:.0%}]")
            else:
                cells.append("-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


if __name__ == "__main__":
    main()
