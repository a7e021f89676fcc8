"""``ros2 run qvla_ros demo``: the suite doing its job without a robot or downloaded weights.

Starts the MuJoCo ALOHA sim node and the policy node (sim time, the embodiment prompt of aloha.yaml)
exactly as ``aloha_sim.launch.py`` would, plays a few TransferCube episodes through ROS 2, prints a
live summary (rates, latency per stage, reward) and leaves in ``--out``: ``summary.md``,
``latency.png`` and camera frames with the predicted gripper paths drawn in.

By default the policy is the Qwen-VLA checkpoint trained with qvla's own tools on expert
demonstrations collected through ROS 2 (installed with qvla_ros under ``models/``; it carries the
robot YAML it was trained with: the top camera at 256x192). ``--random-weights`` uses a tiny
checkpoint with random weights built locally instead (its actions are meaningless, but every stage
runs and the safety layer keeps them in limits); ``--policy expert_transfer_cube`` runs the scripted
expert behind the same interface.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from qvla_core.cli.build_checkpoint import tiny_random_command
from qvla_core.robot_io import load_robot_config
from qvla_ros.tools.bringup import resolve_robot_config, sim_demo_specs, write_robot_variant
from qvla_ros.tools.demo_report import (
    Snapshot,
    commanded_rows,
    latency_plot,
    save_snapshots,
    sim_rows,
    summary_table,
)
from qvla_ros.tools.sim_monitor import SimMonitor, run_episode
from qvla_ros.tools.sim_session import SimSession

INSTRUCTION = "pick up the red cube with the right arm and hand it over to the left arm"
SNAPSHOT_TIMES = (0.6, 1.6, 2.6, 3.6, 4.6)  # sim seconds into each episode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qvla-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", choices=("qwen_vla", "expert_transfer_cube"), default="qwen_vla")
    p.add_argument(
        "--checkpoint", type=Path, help="Qwen-VLA checkpoint (default: the trained TransferCube demo one)"
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="use a tiny Qwen-VLA checkpoint with random weights, built in --out (every stage runs; "
        "its actions mean nothing)",
    )
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--episode-seconds", type=float, default=6.0, help="sim seconds per episode")
    p.add_argument(
        "--robot-config",
        default="",
        help="robot YAML path or name (default: the checkpoint's robot.yaml if it has one, else aloha)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument(
        "--chunking", default="", help="override ros.chunking.mode (replace, temporal_ensemble, rtc)"
    )
    p.add_argument(
        "--image-size",
        default="",
        help="camera image size WxH, rendered by the sim and expected by the policy (default: the robot "
        "YAML's)",
    )
    p.add_argument("--real-time-factor", type=float, default=1.0)
    p.add_argument(
        "--seed", type=int, default=0, help="seed before the first episode (each episode takes the next)"
    )
    p.add_argument("--instruction", default=INSTRUCTION)
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    return p.parse_args(argv)


def image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--image-size must look like 640x480, got {text!r}") from None
    return width, height


def config_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots"


DEMO_CHECKPOINT = "aloha_transfer_cube"  # share/qvla_ros/models/<this>: the committed trained policy


def demo_checkpoint() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "models" / DEMO_CHECKPOINT


def choose_checkpoint(args: argparse.Namespace) -> Path | None:
    """What the Qwen-VLA policy loads: --checkpoint, else the trained demo checkpoint (None: a tiny
    random one is built later, for --random-weights)."""
    if args.policy != "qwen_vla" or args.random_weights:
        return None
    path = args.checkpoint or demo_checkpoint()
    if not (path / "policy_config.json").is_file():
        raise SystemExit(f"demo: {path} is not a Qwen-VLA checkpoint (no policy_config.json)")
    return path


def random_checkpoint(out: Path, robot_yaml: Path) -> Path:
    """A tiny checkpoint with random weights, built (once) under ``out``; never downloads."""
    ckpt = out / "tiny_checkpoint"
    if (ckpt / "policy_config.json").exists():
        return ckpt
    print(f"demo: building a tiny random Qwen-VLA checkpoint in {ckpt} (no download) ...", flush=True)
    cmd = tiny_random_command(str(ckpt), [str(robot_yaml)])
    subprocess.run(cmd, check=True)
    return ckpt


def launch_values(
    args: argparse.Namespace, robot_yaml: Path, checkpoint: Path | None, size: tuple[int, int]
) -> dict[str, str]:
    width, height = size
    return {
        "robot_config": str(robot_yaml),
        "policy": args.policy,
        "checkpoint": str(checkpoint or ""),
        "device": args.device,
        "dtype": args.dtype,
        "seed": str(args.seed),
        "image_width": str(width),
        "image_height": str(height),
        "real_time_factor": str(args.real_time_factor),
    }


class _EpisodeTicker:
    """Called by run_episode: one live line per wall second, and a snapshot at SNAPSHOT_TIMES."""

    def __init__(
        self,
        monitor: SimMonitor,
        episode: int,
        episodes: int,
        snapshots: list[Snapshot],
        sim_channels: tuple[str, ...],
    ) -> None:
        self.monitor, self.episode, self.episodes = monitor, episode, episodes
        self.snapshots, self.sim_channels = snapshots, sim_channels
        self._due = list(SNAPSHOT_TIMES)
        self._last = 0.0
        self._wall0, self._sim0 = time.monotonic(), monitor.now()
        self._state_topics = max(1, len(monitor.states))

    def __call__(self, start: float, elapsed: float) -> None:
        if self._due and elapsed >= self._due[0]:
            self._due.pop(0)
            snap = _snapshot(self.monitor, self.episode, start, self.sim_channels)
            if snap is not None:
                self.snapshots.append(snap)
        if time.monotonic() - self._last >= 1.0:
            self._last = time.monotonic()
            print(self.line(elapsed), flush=True)

    def line(self, elapsed: float) -> str:
        m = self.monitor
        with m.lock:
            stages, status, reward = dict(m.stages), m.status, m.reward
        speed = (m.now() - self._sim0) / max(time.monotonic() - self._wall0, 1e-6)
        stage_text = " ".join(f"{k} {v * 1e3:.1f}" for k, v in stages.items()) or "-"
        run = ("idle", "running", "paused", "stopped", "FAULT")[status.run_state] if status else "?"
        fault = f" ({status.last_fault})" if status is not None and run == "FAULT" else ""
        return (
            f"[ep {self.episode}/{self.episodes} t={elapsed:4.1f}s {speed:.2f}x real time] reward {reward} | "
            f"per wall s: joint states {m.rates.rate('joint states') / self._state_topics:4.1f}/topic, "
            f"cam_high {m.rates.rate('camera'):4.1f}, chunks {m.rates.rate('chunks'):4.1f}, "
            f"commands {m.rates.rate('commands'):4.1f} | latency ms: {stage_text} | policy {run}{fault}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = choose_checkpoint(args)
    # A trained checkpoint carries the robot YAML it was trained with (cameras, sizes, prompt).
    trained_with = checkpoint / "robot.yaml" if checkpoint is not None else None
    robot_arg = args.robot_config or (
        str(trained_with) if trained_with and trained_with.is_file() else "aloha"
    )
    robot_yaml = resolve_robot_config(robot_arg, config_dir())
    config = load_robot_config(robot_yaml)
    first = config.embodiment.cameras[0]
    size = image_size(args.image_size) if args.image_size else (first.width, first.height)
    if args.chunking or any((c.width, c.height) != size for c in config.embodiment.cameras):
        # The policy checks every frame against the YAML's camera size: keep them in step.
        robot_yaml = write_robot_variant(robot_yaml, args.out / "robot.yaml", args.chunking, camera_size=size)
        config = load_robot_config(robot_yaml)
    if args.policy == "qwen_vla" and checkpoint is None:
        checkpoint = random_checkpoint(args.out, robot_yaml)
    args.policy_label = policy_label(args, checkpoint)
    specs = sim_demo_specs(launch_values(args, robot_yaml, checkpoint, size), config_dir())
    logs = args.out / "logs"
    session = SimSession(specs, config, log_dir=logs)
    monitor = session.monitor
    print(f"demo: started {', '.join(s.executable for s in specs)} (logs in {logs})", flush=True)
    results, snapshots = [], []
    code = 0
    try:
        session.wait_ready()
        from qvla_ros.nodes.sim_node import SIM_CHANNELS

        for episode in range(1, args.episodes + 1):
            ticker = _EpisodeTicker(monitor, episode, args.episodes, snapshots, SIM_CHANNELS)
            result = run_episode(monitor, args.instruction, args.episode_seconds, on_tick=ticker)
            results.append(result)
            print(
                f"demo: episode {episode}: {'SUCCESS' if result.success else 'no success'} "
                f"(max reward {result.max_reward}, {result.chunks} chunks, median inference "
                f"{result.median_inference_ms:.1f} ms)",
                flush=True,
            )
    except (TimeoutError, RuntimeError) as exc:
        print(f"demo: FAILED: {exc}", file=sys.stderr)
        for proc in session.procs:
            print(f"--- {proc.log_path} (tail)\n{proc.log()[-2000:]}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("demo: interrupted; stopping the nodes and writing what was recorded", flush=True)
        code = 130
    finally:
        for exe, exit_code in session.close().items():
            if exit_code != 0:
                print(f"demo: {exe} exited with {exit_code}", file=sys.stderr)
        for error in session.stop_errors:
            print(f"demo: {error}", file=sys.stderr)
            code = 1
        with monitor.lock:
            chunks = list(monitor.chunks)
    _write_report(args, results, chunks, snapshots)
    return code


def _snapshot(
    monitor: SimMonitor, episode: int, start: float, sim_channels: tuple[str, ...]
) -> Snapshot | None:
    chunks = monitor.chunks_since(start)
    if not chunks:
        return None
    chunk = chunks[-1]
    found = monitor.frame_near(chunk.observation_stamp)
    if found is None:
        return None
    _, frame = found
    with monitor.lock:
        commands = list(monitor.commands)
    commanded = commanded_rows(commands, monitor.config, chunk.first_due, sim_channels)
    return Snapshot(episode, chunk.observation_stamp - start, frame, sim_rows(chunk, sim_channels), commanded)


def policy_label(args: argparse.Namespace, checkpoint: Path | None) -> str:
    if args.policy != "qwen_vla":
        return args.policy
    if args.random_weights:
        return "Qwen-VLA with random weights (tiny)"
    return f"Qwen-VLA checkpoint {checkpoint}"


def _write_report(args: argparse.Namespace, results: list, chunks: list, snapshots: list[Snapshot]) -> None:
    title = f"qvla demo: {args.policy_label}, device {args.device}"
    table = summary_table(results)
    plot = latency_plot(chunks, args.out / "latency.png", title)
    frames = save_snapshots(snapshots, args.out / "frames")
    ok = sum(r.success for r in results)
    text = (
        f"# {title}\n\n{table}\n\nSuccess: {ok}/{len(results)} episodes.\n\n"
        f"Latency plot: {plot.name}; frames with the predicted gripper paths: "
        + ", ".join(f"frames/{f.name}" for f in frames)
        + "\n"
    )
    (args.out / "summary.md").write_text(text)
    print("\n" + table + f"\n\ndemo: {ok}/{len(results)} successful; wrote {args.out}/summary.md, {plot}, "
          f"{len(frames)} frames in {args.out / 'frames'}", flush=True)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
