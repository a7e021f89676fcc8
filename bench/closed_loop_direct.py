"""Closed-loop success of the scripted TransferCube expert driven directly on the MuJoCo sim.

No ROS: every ``replan_every`` control steps the expert gets an observation (rendered camera images
and the joint state, stamped with sim time), returns a chunk, and the chunk goes to a
``TrajectoryExecutor`` (joint_trajectory_controller rules) as a trajectory starting at the
observation stamp; the sim is stepped at 50 Hz on the executor's command. An episode succeeds when
the reward reaches 4 within ``max_steps`` (gym-aloha's termination rule); "held" means the reward is
still 4 on the last step (the left gripper holds the cube in the air after the right let go).

Run (from the repository root)::

    MUJOCO_GL=egl PYTHONPATH=src/qvla_core python bench/closed_loop_direct.py --seeds 50

It prints a table and writes docs/bench/closed_loop_direct.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvla_core.embodiment import load_embodiment
from qvla_core.policy import ActionChunk, Observation
from qvla_core.sim.aloha_env import AlohaSim
from qvla_core.sim.expert import TransferCubeExpert
from qvla_core.sim.trajectory_executor import TrajectoryExecutor

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Episode:
    seed: int
    success: bool
    held: bool
    first_success_step: int | None
    max_reward: int
    cube_error_m: float
    infer_ms: float
    wall_s: float


def run_episode(
    sim: AlohaSim,
    expert: TransferCubeExpert,
    *,
    seed: int,
    replan_every: int,
    max_steps: int,
    cameras: list[str],
    delay_steps: int = 0,
) -> Episode:
    names = list(expert.embodiment.action_names)
    sim.reset(seed)
    expert.reset()
    executor = TrajectoryExecutor(names, sim.joint_positions())
    rewards: list[int] = []
    infer_s: list[float] = []
    cube_error = float("nan")
    pending: list[tuple[int, ActionChunk]] = []
    start = time.perf_counter()
    for step in range(max_steps):
        if step % replan_every == 0:
            images = sim.render(cameras)
            obs = Observation(
                images={k: v[None] for k, v in images.items()},
                state=sim.joint_positions().astype(np.float32),
                instruction="transfer the cube to the left arm",
                stamp=sim.time,
            )
            chunk = expert.infer(obs)
            infer_s.append(chunk.total_latency)
            pending.append((step + delay_steps, chunk))
            estimate = expert.cube_estimate()
            if estimate is not None and step <= 40:
                cube_error = float(np.linalg.norm(estimate[:2] - sim.object_pose()[:2]))
        while pending and pending[0][0] <= step:  # the chunk arrives delay_steps after its stamp
            chunk = pending.pop(0)[1]
            tfs = [chunk.dt * (k + 1) for k in range(chunk.horizon)]
            executor.accept(chunk.observation_stamp, names, tfs, chunk.actions, sim.time)
        sim.step(executor.target(sim.time + 0.02))
        rewards.append(sim.reward())
    wall = time.perf_counter() - start
    first = rewards.index(4) if 4 in rewards else None
    return Episode(
        seed=seed,
        success=first is not None,
        held=rewards[-1] == 4,
        first_success_step=first,
        max_reward=max(rewards),
        cube_error_m=cube_error,
        infer_ms=1000.0 * statistics.mean(infer_s),
        wall_s=wall,
    )


def render_speed(width: int, height: int, steps: int = 60) -> dict[str, float]:
    """Control steps per second with no, one and four cameras rendered every step."""
    out: dict[str, float] = {}
    for label, cams in (("none", []), ("1 camera", ["cam_high"]), ("4 cameras", None)):
        sim = AlohaSim(width=width, height=height)
        sim.reset(0)
        q = sim.joint_positions()
        sim.render(["cam_high"])  # create the GL context outside the timing
        n = steps * 10 if cams == [] else steps
        t0 = time.perf_counter()
        for _ in range(n):
            sim.step(q)
            if cams != []:
                sim.render(cams)
        out[label] = n / (time.perf_counter() - t0)
        sim.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--replan-every", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument(
        "--delay-steps",
        type=int,
        nargs="+",
        default=[0, 10],
        help="control steps between an observation and its chunk reaching the executor (0.02 s each)",
    )
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--cameras", nargs="+", default=["cam_high"], help="cameras rendered per replan")
    parser.add_argument("--robot", default=str(ROOT / "config/robots/aloha.yaml"))
    parser.add_argument("--out", default=str(ROOT / "docs/bench/closed_loop_direct.md"))
    parser.add_argument("--no-render-speed", action="store_true")
    args = parser.parse_args()

    embodiment = load_embodiment(args.robot)
    sim = AlohaSim(width=args.width, height=args.height)
    expert = TransferCubeExpert(embodiment)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    rows = []
    failures: dict[str, list[int]] = {}
    configs = [(every, delay) for delay in args.delay_steps for every in args.replan_every]
    for every, delay in configs:
        eps = [
            run_episode(
                sim,
                expert,
                seed=s,
                replan_every=every,
                max_steps=args.max_steps,
                cameras=args.cameras,
                delay_steps=delay,
            )
            for s in seeds
        ]
        failures[f"every {every}, delay {delay}"] = [e.seed for e in eps if not e.success]
        firsts = [e.first_success_step for e in eps if e.first_success_step is not None]
        rows.append(
            (
                every,
                f"{delay * 0.02:.2f}",
                f"{sum(e.success for e in eps)}/{len(eps)}",
                f"{sum(e.held for e in eps)}/{len(eps)}",
                f"{statistics.median(firsts) * 0.02:.2f}" if firsts else "-",
                f"{1000 * max(e.cube_error_m for e in eps):.1f}",
                f"{statistics.mean(e.infer_ms for e in eps):.1f}",
                f"{statistics.mean(e.wall_s for e in eps):.2f}",
            )
        )
        print(f"replan_every={every} delay={delay}: {rows[-1][2]} success, {rows[-1][3]} held", flush=True)

    header = (
        "| replan every [steps] | chunk delay [s] | success | held at end | median time to success [s] "
        "| max cube error from image [mm] | mean infer [ms] | wall per episode [s] |"
    )
    lines = [header, "|" + "---|" * 8]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)

    speed = {} if args.no_render_speed else render_speed(args.width, args.height)
    doc = [
        "# Closed loop, direct (no ROS): scripted TransferCube expert on the MuJoCo ALOHA",
        "",
        "Generated by `bench/closed_loop_direct.py`. The expert sees only the rendered "
        f"{', '.join(args.cameras)} image(s) ({args.width}x{args.height}) and the 14-D joint state; "
        "its chunks (50 actions at 50 Hz) are executed through `TrajectoryExecutor` "
        "(joint_trajectory_controller rules), the trajectory starting at the observation stamp. "
        f"Seeds {seeds[0]}..{seeds[-1]}, {args.max_steps} steps "
        f"(= {args.max_steps * 0.02:.0f} s) per episode. "
        "Success: reward 4 reached (gym-aloha's termination rule); held: reward still 4 on the last "
        "step, after the right gripper has let go.",
        "",
        table,
        "",
        "Failed seeds: " + "; ".join(f"{k}: {v or 'none'}" for k, v in failures.items()),
        "",
        "Chunk delay: the chunk reaches the executor that long after its observation (as through ROS); "
        "it still starts at the observation stamp, so its first rows are already past and dropped. "
        "When replan period + delay exceeds the chunk (50 rows = 1 s), the executor holds the last "
        "point until the next chunk arrives and then catches up abruptly: keep period + latency "
        "below the horizon.",
        "",
        "Max cube error: the expert's image-based estimate at its last look (up to 0.8 s) against the "
        "true position; with a replan every 50 steps its only look is the t = 0 frame, taken while the "
        "cube (spawned 3 cm above the table) is still dropping.",
        "",
    ]
    if speed:
        doc += [
            f"Sim speed on this machine ({platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, MUJOCO_GL={os.environ.get('MUJOCO_GL', 'unset')}, "
            f"{args.width}x{args.height}, shadows and MSAA off, 1-min load average "
            f"{os.getloadavg()[0]:.1f} when measured), control steps per second:",
            "",
            "| rendered per step | steps/s |",
            "|---|---|",
            *[f"| {k} | {v:.0f} |" for k, v in speed.items()],
            "",
        ]
        print(speed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(doc), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
