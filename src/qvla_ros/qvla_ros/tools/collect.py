"""``qvla-collect``: expert demonstrations of the MuJoCo ALOHA through the ROS 2 stack -> a dataset.

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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvla_core.robot_io import load_robot_config
from qvla_ros.tools.bringup import NodeSpec, resolve_robot_config, sim_demo_specs, write_robot_variant

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
    p.add_argument("--episode-seconds", type=float, default=6.0, help="sim seconds per episode")
    p.add_argument("--camera-rate", type=float, default=25.0, help="camera rate in sim time [Hz]")
    p.add_argument(
        "--real-time-factor",
        type=float,
        default=0.5,
        help="sim speed; 0.5 leaves the policy node time on a small shared CPU (at 1.0 under load its "
        "inputs went stale and the expert failed 1 episode in 5); 0 starves it",
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


def config_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots"


@dataclass
class EpisodeRecord:
    seed: int
    success: bool
    time_to_success: float | None
    written: int
    dropped: int
    path: str


class Collector:
    """Drives one episode after another through the running sim, policy and recorder nodes."""

    def __init__(self, monitor: Any, seconds: float, task: str) -> None:
        from rcl_interfaces.srv import SetParameters
        from std_msgs.msg import Bool

        from qvla_msgs.srv import StartEpisode, StopEpisode

        self.monitor, self.seconds, self.task = monitor, seconds, task
        self.start_client = monitor.create_client(StartEpisode, "/qvla_recorder/start_episode")
        self.stop_client = monitor.create_client(StopEpisode, "/qvla_recorder/stop_episode")
        self.param_client = monitor.create_client(SetParameters, "/qvla_sim/set_parameters")
        self._lock = threading.Lock()
        self._successes: list[float] = []  # sim times at which ~/success was true
        monitor.create_subscription(Bool, "/qvla_sim/success", self._on_success, 100)
        self.recording = False

    def _on_success(self, msg: Any) -> None:
        if msg.data:
            now = self.monitor.now()
            with self._lock:
                self._successes.append(now)

    def _set_seed(self, seed: int) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
        request = SetParameters.Request(parameters=[Parameter(name="seed", value=value)])
        result = self.monitor.call(self.param_client, request).results[0]
        if not result.successful:
            raise RuntimeError(f"the sim refused seed {seed}: {result.reason}")

    def _start(self) -> None:
        from qvla_msgs.srv import StartEpisode

        deadline = time.monotonic() + 30.0
        while True:
            response = self.monitor.call(self.start_client, StartEpisode.Request(task=self.task))
            if response.accepted:
                self.recording = True
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the recorder did not start an episode: {response.message}")
            time.sleep(0.2)  # topics still being discovered

    def stop(self, success: bool, discard: bool = False) -> Any:
        from qvla_msgs.srv import StopEpisode

        self.recording = False
        response = self.monitor.call(self.stop_client, StopEpisode.Request(success=success, discard=discard))
        if not response.accepted:
            raise RuntimeError(f"the recorder did not stop the episode: {response.message}")
        return response

    def episode(self, seed: int) -> EpisodeRecord:
        m = self.monitor
        m.trigger(m.pause_client)  # the policy holds
        m.wait_sim(m.now() + 0.2, 60.0)  # the hold lands before the scene changes
        self._set_seed(seed)
        message = m.trigger(m.reset_client)
        if f"seed {seed})" not in message:
            raise RuntimeError(f"asked the sim for seed {seed}, it answered: {message}")
        m.wait_sim(m.now() + 0.1, 60.0)  # fresh states and frames of the new scene
        self._start()
        m.instruct(self.task)
        m.trigger(m.resume_client)
        start = m.now()
        m.wait_sim(start + self.seconds, max(60.0, self.seconds * 30.0))
        end = m.now()
        with self._lock:
            hits = [t for t in self._successes if start < t <= end]
            self._successes.clear()
        response = self.stop(success=bool(hits))
        return EpisodeRecord(
            seed,
            bool(hits),
            hits[0] - start if hits else None,
            int(response.messages_written),
            int(response.messages_dropped),
            str(response.path),
        )


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
    specs = sim_demo_specs(values, config_dir())
    recorder = NodeSpec(
        "qvla_ros",
        "recorder_node",
        "qvla_recorder",
        parameters={"robot_config": str(robot_yaml), "output_dir": str(bags), "use_sim_time": True},
        log_level="info",
    )
    return [*specs, recorder]


def write_variant(args: argparse.Namespace) -> Path:
    source = resolve_robot_config(args.robot, config_dir())
    base = load_robot_config(source)
    cameras = args.cameras.split(",") if args.cameras else list(base.embodiment.camera_names)
    if args.image_size is None:
        first = base.embodiment.cameras[0]
        args.image_size = (first.width, first.height)
    return write_robot_variant(
        source,
        args.out / "robot.yaml",
        args.chunking,
        camera_size=args.image_size,
        cameras=cameras,
        action_source="commanded_trajectory",
    )


def collect(args: argparse.Namespace, robot_yaml: Path, bags: Path) -> tuple[list[EpisodeRecord], float]:
    """Run every episode; returns the records and the sim speed (sim s per wall s)."""
    from tqdm import tqdm

    from qvla_ros.tools.sim_session import SimSession

    session = SimSession(
        node_specs(args, robot_yaml, bags), load_robot_config(robot_yaml), log_dir=args.out / "logs"
    )
    records: list[EpisodeRecord] = []
    collector = None
    try:
        session.wait_ready()
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
