"""``qvla-collect``: expert demonstrations in simulation through the ROS 2 stack -> a dataset.

For a mobile base (``--robot vln_nav``: a YAML whose actions are waypoints) it runs the navigation sim
instead, with the privileged navigation expert; see :mod:`qvla_ros.tools.collect_nav`. The rest
(the variant YAML, the recorder, the conversion, ``summary.md``) is the same.

Starts the sim node, the policy node with the scripted TransferCube expert (sim time) and the
recorder node, exactly as a robot would run them, plays one episode per seed like an operator
(pause the policy, set the sim's seed, reset the sim, ``~/start_episode`` on the recorder,
``set_instruction`` with reset, resume; after ``--episode-seconds`` of sim time ``~/stop_episode``
with the success the sim reported on ``~/success``), then converts the recorded bags into one
LeRobot v3.0 dataset (``qvla-convert``'s code) under ``--out/dataset``. An episode the converter
cannot use (a gap in a sensor stream longer than the YAML's staleness limit) is left out and listed
with the reason in ``summary.md``.

The robot YAML the nodes get is a variant of ``--robot`` written to ``--out/robot.yaml``: only the
``--cameras`` asked for, at ``--image-size``, the ``--chunking`` mode, and the actions recorded as
the commands sent to the controllers (``ros.recording.actions.source: commanded_trajectory``; the
sim has no teleoperation leader). Train and evaluate with that same YAML.

Leaves in ``--out``: ``robot.yaml``, ``bags/`` (one ROS 2 bag per episode; ``--delete-bags`` removes
them once converted), ``dataset/``, ``logs/`` and ``summary.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from qvla_core.robot_io import RobotConfig, load_robot_config
from qvla_core.runtime.output_mapping import waypoint_columns
from qvla_ros.tools.bringup import NodeSpec, resolve_robot_config, sim_demo_specs, write_robot_variant
from qvla_ros.tools.recorder_driver import EpisodeRecord, RecorderDriver, config_dir, recorder_spec

TASK = "pick up the red cube with the right arm and hand it over to the left arm"
SUCCESS_REWARD = 4


def seeds_arg(text: str) -> list[int]:
    """``1000-1049`` or ``3,5,9`` (or a mix: ``1-3,7``)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 1000-1049 or 3,5,9; got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"no seeds (or a negative one) in {text!r}")
    return seeds


def size_arg(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 160x120, got {text!r}") from None
    return width, height


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qvla-collect", description=__doc__.split("\n\n")[0])
    p.add_argument("--robot", default="aloha", help="robot YAML path or name (default aloha)")
    p.add_argument("--episodes", type=int, help="number of episodes (default: one per seed)")
    p.add_argument("--seeds", type=seeds_arg, help="sim seeds, e.g. 1000-1049 (default 0..episodes-1)")
    p.add_argument("--out", type=Path, required=True, help="output directory (must not hold a dataset)")
    p.add_argument("--cameras", help="comma-separated cameras to keep (default: all of the robot YAML)")
    p.add_argument("--image-size", type=size_arg, help="WxH of every camera (default: the robot YAML's)")
    p.add_argument(
        "--episode-seconds",
        type=float,
        help="sim seconds per episode (default 6); navigation: the most (default 90), an episode ends "
        "once the base has rested 2 s",
    )
    p.add_argument("--camera-rate", type=float, help="camera rate in sim time [Hz] (default 25; nav 10)")
    p.add_argument(
        "--real-time-factor",
        type=float,
        help="sim speed (default 0.5; nav 1.0); 0.5 leaves the policy node time on a small shared CPU "
        "(at 1.0 under load its inputs went stale and the expert failed 1 episode in 5); 0 starves it",
    )
    p.add_argument("--chunking", default="", help="ros.chunking.mode (replace, temporal_ensemble, rtc)")
    p.add_argument("--task", default=TASK, help="the task text given to the policy and stored")
    p.add_argument("--keep-failed", action="store_true", help="also put unsuccessful episodes in the dataset")
    p.add_argument("--delete-bags", action="store_true", help="delete the bags once converted")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out/dataset")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = list(range(args.episodes or 1))
    if args.episodes is None:
        args.episodes = len(args.seeds)
    if args.episodes != len(args.seeds):
        p.error(f"--episodes {args.episodes} but --seeds gives {len(args.seeds)} seeds")
    return args


class Collector(RecorderDriver):
    """ALOHA: one episode after another through the running sim, policy and recorder nodes."""

    def __init__(self, monitor: Any, seconds: float, task: str) -> None:
        from std_msgs.msg import Bool

        super().__init__(monitor, "qvla_sim")
        self.seconds, self.task = seconds, task
        self._successes: list[float] = []  # sim times at which ~/success was true
        monitor.create_subscription(Bool, "/qvla_sim/success", self._on_success, 100)

    def _on_success(self, msg: Any) -> None:
        if msg.data:
            now = self.monitor.now()
            with self._lock:
                self._successes.append(now)

    def episode(self, seed: int) -> EpisodeRecord:
        m = self.monitor
        self.reset_to(seed)
        start = self.begin(self.task)
        m.wait_sim(start + self.seconds, max(60.0, self.seconds * 30.0))
        end = m.now()
        with self._lock:
            hits = [t for t in self._successes if start < t <= end]
            self._successes.clear()
        return self.finish(seed, self.task, start, hits[0] if hits else end, bool(hits))


def node_specs(args: argparse.Namespace, robot_yaml: Path, bags: Path) -> list[NodeSpec]:
    width, height = args.image_size
    values = {
        "robot_config": str(robot_yaml),
        "policy": "expert_transfer_cube",
        "device": "cpu",
        "dtype": "float32",
        "image_width": str(width),
        "image_height": str(height),
        "camera_rate_hz": str(args.camera_rate),
        "real_time_factor": str(args.real_time_factor),
        "log_level": "warn",
    }
    return [*sim_demo_specs(values, config_dir()), recorder_spec(robot_yaml, bags)]


def is_navigation(config: RobotConfig) -> bool:
    """A mobile base: its actions are waypoints (collected in the navigation sim)."""
    return waypoint_columns(config.embodiment) is not None


def write_variant(args: argparse.Namespace) -> Path:
    source = resolve_robot_config(args.robot, config_dir())
    base = load_robot_config(source)
    nav = is_navigation(base)
    if args.episode_seconds is None:
        args.episode_seconds = 90.0 if nav else 6.0
    if args.camera_rate is None:
        args.camera_rate = 10.0 if nav else 25.0
    if args.real_time_factor is None:
        args.real_time_factor = 1.0 if nav else 0.5
    cameras = args.cameras.split(",") if args.cameras else list(base.embodiment.camera_names)
    if args.image_size is None:
        first = base.embodiment.cameras[0]
        args.image_size = (first.width, first.height)
    variant = write_robot_variant(
        source,
        args.out / "robot.yaml",
        args.chunking,
        camera_size=args.image_size,
        cameras=cameras,
        # The ALOHA sim has no leader arms: the commands are the actions. A base keeps its odometry.
        action_source="" if nav else "commanded_trajectory",
    )
    if nav:
        from qvla_ros.tools.collect_nav import history_on_grid

        history_on_grid(variant)
    return variant


def collect(args: argparse.Namespace, robot_yaml: Path, bags: Path) -> tuple[list[EpisodeRecord], float]:
    """Run every episode; returns the records and the sim speed (sim s per wall s)."""
    from tqdm import tqdm

    from qvla_ros.tools import collect_nav
    from qvla_ros.tools.sim_session import SimSession

    config = load_robot_config(robot_yaml)
    nav = is_navigation(config)
    specs = (collect_nav.node_specs if nav else node_specs)(args, robot_yaml, bags)
    session = SimSession(specs, config, log_dir=args.out / "logs")
    records: list[EpisodeRecord] = []
    collector: Any = None
    try:
        session.wait_ready()
        if nav:
            collector = collect_nav.NavCollector(session.monitor, args.episode_seconds, args.real_time_factor)
        else:
            collector = Collector(session.monitor, args.episode_seconds, args.task)
        wall0, sim0 = time.monotonic(), session.monitor.now()
        with tqdm(args.seeds, unit="episode", desc="qvla-collect") as bar:
            for seed in bar:
                records.append(collector.episode(seed))
                bar.set_postfix(success=f"{sum(r.success for r in records)}/{len(records)}")
        speed = (session.monitor.now() - sim0) / max(time.monotonic() - wall0, 1e-9)
    except BaseException:
        if collector is not None and collector.recording:
            try:
                collector.stop(success=False, discard=True)  # no half episode in the bags
            except Exception as exc:
                print(f"qvla-collect: could not discard the open episode: {exc}", file=sys.stderr)
        raise
    finally:
        codes = session.close()
        for exe, code in codes.items():
            if code != 0:
                print(f"qvla-collect: {exe} exited with {code} (log in {args.out / 'logs'})", file=sys.stderr)
    return records, speed


def main(argv: list[str] | None = None) -> int:
    from qvla_core.data.convert import convert, dir_size, summary
    from qvla_core.data.mcap_reader import find_bags
    from qvla_core.errors import QvlaError

    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bags = args.out / "bags"
    dataset = args.out / "dataset"
    if (dataset.exists() and not args.overwrite) or (bags.exists() and any(bags.iterdir())):
        print(
            f"qvla-collect: {args.out} already holds bags or a dataset: choose a new --out", file=sys.stderr
        )
        return 2
    t0 = time.monotonic()
    try:
        robot_yaml = write_variant(args)
        records, speed = collect(args, robot_yaml, bags)
    except (TimeoutError, RuntimeError, ValueError, QvlaError) as exc:
        print(f"qvla-collect: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("qvla-collect: interrupted; the bags recorded so far are in " + str(bags), file=sys.stderr)
        return 130
    t1 = time.monotonic()
    kept = [r for r in records if r.success or args.keep_failed]
    if not kept:
        print(
            f"qvla-collect: none of the {len(records)} episodes succeeded (bags in {bags}; --keep-failed "
            "converts them anyway; logs in " + str(args.out / "logs") + ")",
            file=sys.stderr,
        )
        return 1
    try:
        selected = find_bags([Path(r.path).parent for r in kept])
        # A sensor gap in one take (the 2-core sim stalled for a moment) leaves that episode out, listed
        # with the reason in summary.md, rather than throwing away the other episodes' hour of work.
        report = convert(selected, dataset, overwrite=args.overwrite, skip_bad=True)
    except QvlaError as exc:
        print(f"qvla-collect: conversion FAILED: {exc}", file=sys.stderr)
        return 1
    t2 = time.monotonic()
    for episode in report.episodes:
        if episode.skipped:
            print(f"qvla-collect: left out {episode.source}: {episode.skipped}", file=sys.stderr)
    bag_bytes = dir_size(bags)
    if args.delete_bags:
        shutil.rmtree(bags)
    text = report_text(args, records, report, speed, bag_bytes, (t1 - t0, t2 - t1), summary(report))
    (args.out / "summary.md").write_text(text)
    print("\n" + text)
    return 0


def report_text(
    args: argparse.Namespace,
    records: list[EpisodeRecord],
    report: Any,
    speed: float,
    bag_bytes: int,
    phases: tuple[float, float],
    table: str,
) -> str:
    from qvla_core.data.convert import dir_size

    ok = [r for r in records if r.success]
    tts = sorted(r.time_to_success for r in ok if r.time_to_success is not None)
    recorder_drops = sum(r.dropped for r in records)
    gaps = sum(e.frames_missing for e in report.written)
    failed = [r.seed for r in records if not r.success]
    width, height = args.image_size
    return (
        f"# qvla-collect: {len(records)} expert episodes through ROS 2\n\n"
        f"Command: `qvla-collect {' '.join(sys.argv[1:])}`\n\n"
        f"- episodes: {len(records)} (seeds {args.seeds[0]}..{args.seeds[-1]}), expert successes: "
        f"{len(ok)}/{len(records)}" + (f" (failed seeds {failed})" if failed else "") + "\n"
        f"- median time to success: {tts[len(tts) // 2] if tts else float('nan'):.2f} sim s\n"
        f"- cameras: {args.cameras or 'all'} at {width}x{height}, {args.camera_rate:g} Hz; "
        f"{args.episode_seconds:g} sim s per episode; sim speed {speed:.2f}x real time\n"
        f"- dataset: {len(report.written)} episodes, {report.frames} frames, "
        f"{dir_size(report.dataset) / 1e6:.1f} MB at {report.dataset}; bags {bag_bytes / 1e6:.1f} MB\n"
        f"- frames dropped: {recorder_drops + gaps} "
        f"(recorder drops {recorder_drops}, conversion gaps {gaps})\n"
        f"- wall time: collection {phases[0] / 60:.1f} min, conversion {phases[1]:.0f} s\n\n"
        f"{table}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
