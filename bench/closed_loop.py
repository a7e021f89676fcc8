"""Closed-loop success of the scripted TransferCube expert: driven directly vs through the ROS 2 stack.

Direct: bench/closed_loop_direct.py's loop (sim, expert, JTC-rule executor; no ROS), replanning every
``--direct-replan`` steps. Through the stack: the installed sim node and policy node (expert policy,
sim time), exactly as ``aloha_sim.launch.py`` starts them, for each chunk-splicing mode; episodes
are played like an operator would (pause, sim reset, instruction with reset, resume) and success
is read from the sim's reward topic. The same seeds are used for both.

"Delay" is what the stack adds before a command reaches the robot: sim time at which the
JointTrajectory arrived minus the stamp of the observation it was computed from (sim seconds; the
sim runs slower than real time on a CPU, so wall-clock delays are larger by 1 / the speed shown).

Run (from the repository root, after scripts/setup.sh)::

    source scripts/env.sh && python bench/closed_loop.py --seeds 10

It prints a table and writes docs/bench/closed_loop_ros.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qvla_core.robot_io import load_robot_config
from qvla_ros.tools.bringup import sim_demo_specs, write_robot_variant
from qvla_ros.tools.sim_monitor import EpisodeResult, run_episode
from qvla_ros.tools.sim_session import SimSession

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
MODES = ("replace", "temporal_ensemble", "rtc")
READING = (
    "Reading the delays: the sim clock advances in 20 ms steps and, on this CPU, at about half real "
    "time, so most trajectories reach the controller before the next sim step (0 sim ms); in wall "
    "time the delay is the inference plus the pipeline (transport of four camera images in, the "
    "trajectory out). The time to success equals the direct run's (the expert's schedule).\n"
)


def direct(
    seeds: list[int], replan_every: int, seconds: float, size: tuple[int, int]
) -> list[tuple[bool, bool]]:
    """(success, held) per seed."""
    from closed_loop_direct import run_episode as direct_episode

    from qvla_core.embodiment import load_embodiment
    from qvla_core.sim.aloha_env import AlohaSim
    from qvla_core.sim.expert import TransferCubeExpert

    sim = AlohaSim(cameras={"cam_high": "top"}, width=size[0], height=size[1])
    expert = TransferCubeExpert(load_embodiment(ROOT / "config/robots/aloha.yaml"))
    steps = round(seconds / 0.02)
    episodes = [
        direct_episode(sim, expert, seed=s, replan_every=replan_every, max_steps=steps, cameras=["cam_high"])
        for s in seeds
    ]
    out = [(e.success, e.held) for e in episodes]
    sim.close()
    return out


def through_ros(
    mode: str,
    first_seed: int,
    n: int,
    seconds: float,
    size: tuple[int, int],
    rtf: float,
    work: Path,
    *,
    robot: Path = ROOT / "config/robots/aloha.yaml",
    policy: str = "expert_transfer_cube",
    checkpoint: Path | None = None,
    instruction: str = "transfer the cube",
    on_episode: Callable[[EpisodeResult], None] | None = None,
) -> tuple[list[EpisodeResult], tuple[np.ndarray, np.ndarray], float]:
    """Episodes with seeds first_seed .. first_seed + n - 1 of ``policy`` (a ``checkpoint`` for
    qwen_vla) on ``robot`` with its cameras at ``size`` and chunking ``mode``; returns results,
    (sim, wall) delays [s] from observation stamp to the trajectory at the controller, and the sim
    speed."""
    variant = write_robot_variant(robot, work / f"{robot.stem}_{policy}_{mode}.yaml", mode, camera_size=size)
    values = {
        "robot_config": str(variant),
        "policy": policy,
        "checkpoint": str(checkpoint or ""),
        "device": "cpu",
        "dtype": "float32",
        "seed": str(first_seed - 1),  # each reset takes the next seed
        "image_width": str(size[0]),
        "image_height": str(size[1]),
        "real_time_factor": str(rtf),
        "log_level": "warn",
    }
    specs = sim_demo_specs(values, ROOT / "install/qvla_ros/share/qvla_ros/config/robots")
    session = SimSession(specs, load_robot_config(variant), log_dir=work / f"logs_{policy}_{mode}")
    monitor = session.monitor
    results: list[EpisodeResult] = []
    try:
        session.wait_ready()
        wall0, sim0 = time.monotonic(), monitor.now()
        for _ in range(n):
            results.append(run_episode(monitor, instruction, seconds))
            r = results[-1]
            if on_episode is not None:
                on_episode(r)
            else:
                outcome = "success" if r.success else "FAIL"
                print(f"  {mode}: seed {r.seed}: {outcome} (max reward {r.max_reward})")
        speed = (monitor.now() - sim0) / (time.monotonic() - wall0)
        delays = monitor.command_delays()
    finally:
        session.close()
    return results, delays, speed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=6.0, help="sim seconds per episode")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--size", default="640x480", help="camera images WxH (rendered and expected)")
    p.add_argument("--real-time-factor", type=float, default=1.0)
    p.add_argument("--direct-replan", type=int, default=10, help="direct run: replan every N steps")
    p.add_argument("--work", type=Path, default=Path("/tmp/qvla_closed_loop"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/bench/closed_loop_ros.md")
    args = p.parse_args()
    size = tuple(int(x) for x in args.size.lower().split("x"))
    assert len(size) == 2
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    t0 = time.monotonic()
    base = direct(seeds, args.direct_replan, args.seconds, size)  # type: ignore[arg-type]
    direct_label = f"direct (no ROS, replan every {args.direct_replan} steps)"
    base_ok = sum(ok for ok, _ in base)
    base_held = sum(held for _, held in base)
    rows = [f"| {direct_label} | {base_ok}/{len(base)} | {base_held}/{len(base)} | - | - | - | - | - |"]
    failures = {"direct": [s for s, (ok, _) in zip(seeds, base, strict=True) if not ok]}
    for mode in args.modes:
        results, delays, speed = through_ros(
            mode,
            args.first_seed,
            args.seeds,
            args.seconds,
            size,
            args.real_time_factor,
            args.work,  # type: ignore[arg-type]
        )
        ok = sum(r.success for r in results)
        held = sum(r.held for r in results)
        tts = [r.time_to_success for r in results if r.time_to_success is not None]
        ratio = ok / max(1, base_ok)
        infer = statistics.median(r.median_inference_ms for r in results)
        d_sim, d_wall = (
            x[np.isfinite(x)] * 1e3 if np.isfinite(x).any() else np.array([np.nan]) for x in delays
        )
        rows.append(
            f"| ROS 2 stack, {mode} | {ok}/{len(results)} ({ratio:.0%} of direct) | {held}/{len(results)} "
            f"| {statistics.median(tts) if tts else float('nan'):.2f} "
            f"| {np.median(d_sim):.0f} / {np.percentile(d_sim, 90):.0f} "
            f"| {np.median(d_wall):.0f} / {np.percentile(d_wall, 90):.0f} "
            f"| {infer:.1f} | {speed:.2f}x |"
        )
        failures[mode] = [r.seed for r in results if not r.success]
    header = (
        "| run | success | held at end | median time to success [sim s] "
        "| obs -> command at controller, median / p90 [sim ms] | the same [wall ms] "
        "| median inference [wall ms] | sim speed |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    table = header + "\n" + "\n".join(rows)
    load = os.getloadavg()[0]
    text = (
        "# Closed loop through the ROS 2 stack: scripted TransferCube expert\n\n"
        f"Generated by `bench/closed_loop.py --seeds {args.seeds} --size {args.size}` "
        f"({args.seconds:g} sim s per episode, seeds {seeds[0]}..{seeds[-1]}), "
        f"{platform.machine()}, {os.cpu_count()} CPUs, 1-min load average {load:.1f} at the end, "
        f"{(time.monotonic() - t0) / 60:.1f} min.\n\n"
        "Through the stack: installed sim_node + policy_node (expert policy, sim time), four cameras "
        f"at {args.size}, the policy replanning on every complete observation; the robot YAML's "
        "`ros.chunking.mode` set per row. Success: reward 4 reached; held: still 4 at the end.\n\n"
        f"{table}\n\nFailed seeds: "
        + "; ".join(f"{k}: {v or 'none'}" for k, v in failures.items())
        + "\n\n"
        + READING
    )
    print("\n" + table)
    args.out.write_text(text)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
