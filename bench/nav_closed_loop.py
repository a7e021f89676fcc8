"""The navigation expert (and the chance baseline) through the ROS 2 stack, on held-out scenes.

The installed nav_sim_node and policy node, exactly as ``vln_nav_sim.launch.py`` starts them
(qvla_ros.tools.bringup.nav_sim_demo_specs; sim time; the 640x480 camera at 10 Hz; one plan a second
published as a Path in base_link and followed by the sim's local controller). Episodes follow one
another through the sim's ``~/reset`` (the next seed; the sim publishes the new instruction). The
trajectory is read from ``/odom`` and collisions from ``~/collisions``; an episode ends when the base
has been at rest for 2 s of sim time after moving, or after ``--max-time`` s. Metrics as in
bench/nav_direct.py (qvla_core.sim.nav.metrics).

The chance baseline runs as a policy plugin (``policy:=module.path:factory``); ``--no-baseline``
skips it. ``--checkpoint DIR`` adds a learned Qwen-VLA policy (the policy node with
``checkpoint:=DIR`` on the CPU, float32), with ``--robot-config`` the YAML it was trained with (e.g.
``qvla-collect``'s ``OUT/robot.yaml``: its camera size is what the sim renders); ``--no-expert``
skips the expert.

Run (from the repository root, after scripts/setup.sh)::

    source scripts/env.sh && MUJOCO_GL=egl python bench/nav_closed_loop.py --seeds 50

It prints a table and writes docs/bench/nav_closed_loop.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from qvla_core.sim.nav.controller import compose
from qvla_core.sim.nav.generate import generate_scene
from qvla_core.sim.nav.metrics import (
    LEGEND,
    TABLE_HEADER,
    NavMetrics,
    episode_metrics,
    shortest_path_length,
    summarize,
    table_row,
)
from qvla_ros.io.conversions import to_sec
from qvla_ros.tools.bringup import nav_sim_demo_specs
from qvla_ros.tools.collect_nav import came_to_rest
from qvla_ros.tools.node_process import NodeProcess
from qvla_ros.tools.sim_monitor import Spinner, call_service

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "install" / "qvla_ros" / "share" / "qvla_ros" / "config" / "robots"
BASELINE = "qvla_ros.nodes.nav_ground_truth:make_chance_baseline"
SEARCH = "qvla_ros.nodes.nav_ground_truth:make_searching_expert"


class Watch(Node):
    def __init__(self, context: Context) -> None:
        super().__init__("qvla_nav_bench", context=context)
        self.lock = threading.Lock()
        self.scene: dict[str, object] | None = None
        self.odom: list[tuple[float, float, float, float]] = []
        self.collisions = 0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, "/qvla_nav_sim/scene", self._on_scene, latched)
        self.create_subscription(Odometry, "/odom", self._on_odom, 50)
        self.create_subscription(Int32, "/qvla_nav_sim/collisions", self._on_collisions, 10)
        self.reset = self.create_client(Trigger, "/qvla_nav_sim/reset")

    def _on_scene(self, msg: String) -> None:
        with self.lock:
            self.scene = json.loads(msg.data)
            self.odom = []

    def _on_odom(self, msg: Odometry) -> None:
        q = msg.pose.pose.orientation
        sample = (to_sec(msg.header.stamp), msg.pose.pose.position.x, msg.pose.pose.position.y)
        with self.lock:
            if self.scene is not None and sample[0] >= float(self.scene["stamp"]):  # type: ignore[arg-type]
                self.odom.append((*sample, 2.0 * math.atan2(q.z, q.w)))

    def _on_collisions(self, msg: Int32) -> None:
        self.collisions = int(msg.data)


def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def episode(watch: Watch, seed: int, max_time: float, wall_limit: float) -> NavMetrics:
    """Watch the running episode of ``seed`` until the base stops (or the time limit)."""
    _wait(lambda: watch.scene is not None and watch.scene["seed"] == seed, 30.0, f"scene {seed}")
    scene = generate_scene(seed)
    rest = 2.0
    wall0 = time.monotonic()
    stopped = False
    while time.monotonic() - wall0 < wall_limit:
        time.sleep(0.2)
        with watch.lock:
            odom = list(watch.odom)
        if len(odom) < 2:
            continue
        if odom[-1][0] - odom[0][0] > max_time:
            break
        if came_to_rest(odom, rest) is not None:
            stopped = True
            break
    with watch.lock:
        odom = list(watch.odom)
    world = compose(scene.start, [o[1:] for o in odom]) if odom else np.array([scene.start])
    goal = scene.target_object
    return episode_metrics(
        np.vstack([np.asarray(scene.start)[None, :2], world[:, :2]]),
        (goal.x, goal.y),
        shortest_path_length(scene),
        collisions=watch.collisions,
        stopped=stopped,
        others=[(o.x, o.y) for o in scene.objects if o is not goal],
    )


def run(
    policy: str,
    seeds: list[int],
    rtf: float,
    max_time: float,
    log_dir: Path | None,
    robot_config: str = "",
    checkpoint: str = "",
) -> tuple[list[NavMetrics], float, float]:
    values = {"policy": policy, "seed": str(seeds[0]), "real_time_factor": str(rtf), "device": "cpu"}
    values |= {"robot_config": robot_config, "checkpoint": checkpoint, "dtype": "float32"}
    specs = nav_sim_demo_specs(values, CONFIG_DIR)
    procs = [NodeProcess(s, log_dir=log_dir, prefix=ROOT / "install" / s.package) for s in specs]
    context = Context()
    rclpy.init(context=context)
    watch = Watch(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(watch)
    spinner = Spinner(executor)
    results: list[NavMetrics] = []
    sim_s = 0.0
    t0 = time.monotonic()
    try:
        for i, seed in enumerate(seeds):
            if i > 0:
                reply = call_service(watch.reset, Trigger.Request(), 60.0)
                if not reply.success:
                    raise RuntimeError(f"~/reset failed: {reply.message}")
            m = episode(watch, seed, max_time, wall_limit=max_time / max(rtf, 0.25) * 4 + 60)
            with watch.lock:
                sim_s += watch.odom[-1][0] - watch.odom[0][0] if len(watch.odom) > 1 else 0.0
            results.append(m)
            print(
                f"  {policy} seed {seed}: success {m.success} NE {m.navigation_error:.2f} "
                f"TL {m.trajectory_length:.1f} SPL {m.spl:.2f} collisions {m.collisions}",
                flush=True,
            )
    finally:
        spinner.stop()
        watch.destroy_node()
        rclpy.shutdown(context=context)
        for p in procs:
            p.close()
    return results, time.monotonic() - t0, sim_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--first-seed", type=int, default=10000, help="held out: tests use seeds < 1000")
    ap.add_argument("--max-time", type=float, default=90.0, help="episode limit [sim s]")
    ap.add_argument("--real-time-factor", type=float, default=1.0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the chance baseline (plugin policy)")
    ap.add_argument("--no-expert", action="store_true", help="skip the expert")
    ap.add_argument(
        "--search", action="store_true", help="also the searching expert (sees the object before it goes)"
    )
    ap.add_argument("--checkpoint", default="", help="also a learned policy: this checkpoint directory")
    ap.add_argument("--robot-config", default="", help="robot YAML of the nodes (default: vln_nav)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "nav_closed_loop.md"))
    ap.add_argument("--log-dir", type=Path, default=None, help="keep the nodes' logs here")
    args = ap.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    runs = [] if args.no_expert else [("expert (expert_vln_nav)", "expert_vln_nav")]
    if args.search:
        runs.append(("searching expert (must see it first)", SEARCH))
    if not args.no_baseline:
        runs.append(("chance (walks to a random object)", BASELINE))
    if args.checkpoint:
        runs.append((f"learned ({Path(args.checkpoint).name})", "qwen_vla"))
    rows = []
    for name, policy in runs:
        log_dir = None if args.log_dir is None else args.log_dir / policy.split(":")[-1]
        checkpoint = args.checkpoint if policy == "qwen_vla" else ""
        results, wall, sim_s = run(
            policy, seeds, args.real_time_factor, args.max_time, log_dir, args.robot_config, checkpoint
        )
        rows.append((name, summarize(results), wall, sim_s))
    command = " ".join(sys.argv[1:])
    lines = [
        "# Navigation through ROS 2: " + ", ".join(name.split(" (")[0] for name, _ in runs),
        "",
        f"{args.seeds} held-out scenes (seeds {seeds[0]}..{seeds[-1]}), nav_sim_node + policy_node as "
        f"vln_nav_sim.launch.py starts them, real_time_factor {args.real_time_factor:g}, at most "
        f"{args.max_time:g} sim s per episode, {platform.processor() or platform.machine()}. Command: "
        f"`python bench/nav_closed_loop.py {command}`.",
        "",
        *TABLE_HEADER,
    ]
    legend = ["", LEGEND]
    lines += [table_row(name, s) for name, s, _, _ in rows]
    lines.append("")
    for name, _, wall, sim_s in rows:
        lines.append(f"{name}: {wall:.0f} s wall for {sim_s:.0f} s of sim time.")
    text = "\n".join(lines + legend) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
