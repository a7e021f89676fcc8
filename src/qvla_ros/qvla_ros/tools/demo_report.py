"""What the demo leaves behind: a latency plot, camera frames with the predicted path, a summary table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qvla_core.robot_io import RobotConfig, TrajectoryOutput
from qvla_core.runtime.joint_state import GripperScaling
from qvla_ros.tools.sim_monitor import ChunkRecord, CommandRecord, EpisodeResult


@dataclass
class Snapshot:
    """A camera frame and the chunk predicted from (about) that observation."""

    episode: int
    elapsed: float  # sim seconds into the episode
    frame: np.ndarray  # RGB
    rows: np.ndarray  # (H, 14) predicted joint rows in the sim's channel order (normalised grippers)
    commanded: np.ndarray | None = None  # (n, 14) what the controllers received from that chunk


def sim_rows(chunk: ChunkRecord, sim_channels: tuple[str, ...]) -> np.ndarray:
    """The chunk's actions re-ordered into the sim's 14 channels (by name)."""
    where = {name: i for i, name in enumerate(chunk.channel_names)}
    missing = [ch for ch in sim_channels if ch not in where]
    if missing:
        raise ValueError(f"the chunk has no channels {missing}")
    return np.asarray(chunk.actions[:, [where[ch] for ch in sim_channels]], dtype=np.float64)


def commanded_rows(
    commands: list[CommandRecord], config: RobotConfig, start: float, sim_channels: tuple[str, ...]
) -> np.ndarray | None:
    """The trajectories sent for one chunk (same start stamp on every controller), joined into
    sim-order rows with normalised grippers: what the robot was told after the safety filter."""
    grippers = GripperScaling(config.ros.gripper_raw_range)
    where = {ch: i for i, ch in enumerate(sim_channels)}
    rows: np.ndarray | None = None
    outputs = {o.topic: o for o in config.ros.outputs if isinstance(o, TrajectoryOutput)}
    found = {c.topic: c for c in commands if abs(c.start - start) < 1e-6 and c.topic in outputs}
    if set(found) != set(outputs):
        return None
    for topic, cmd in found.items():
        out = outputs[topic]
        by_joint = {name: k for k, name in enumerate(cmd.joint_names)}
        if rows is None:
            rows = np.zeros((cmd.positions.shape[0], len(sim_channels)))
        if cmd.positions.shape[0] != rows.shape[0]:
            return None
        for joint, channel in zip(out.joint_names, out.channels, strict=True):
            raw = cmd.positions[:, by_joint[joint]]
            col = [grippers.to_normalised(channel, float(v)) for v in raw] if grippers.has(channel) else raw
            rows[:, where[channel]] = col
    return rows


def summary_table(results: list[EpisodeResult]) -> str:
    lines = [
        "| episode | seed | success | held at end | time to success [s] | max reward | chunks | commands "
        "| median inference [ms] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results, 1):
        tts = "-" if r.time_to_success is None else f"{r.time_to_success:.2f}"
        lines.append(
            f"| {i} | {r.seed if r.seed is not None else '-'} | {'yes' if r.success else 'no'} "
            f"| {'yes' if r.held else 'no'} | {tts} | {r.max_reward} | {r.chunks} | {r.commands} "
            f"| {r.median_inference_ms:.1f} |"
        )
    return "\n".join(lines)


def latency_plot(chunks: list[ChunkRecord], path: Path, title: str) -> Path:
    """Inference latency per chunk over sim time, and the interval between chunks; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a robot PC or a CI machine
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), constrained_layout=True)
    if chunks:
        t = np.array([c.observation_stamp for c in chunks])
        total = np.array([c.inference_s * 1e3 for c in chunks])
        top.plot(t, total, ".", ms=3, label="inference (policy's own measure)")
        stage_names = sorted({k for c in chunks for k in c.stages if k != "total"})
        for name in stage_names:
            top.plot(t, [c.stages.get(name, np.nan) * 1e3 for c in chunks], lw=0.8, label=f"stage: {name}")
        top.legend(fontsize=8, loc="upper right")
        gaps = np.diff([c.received_wall for c in chunks]) * 1e3
        if gaps.size:
            bottom.hist(gaps, bins=40)
            bottom.axvline(
                float(np.median(gaps)), color="k", ls="--", label=f"median {np.median(gaps):.0f} ms"
            )
            bottom.legend(fontsize=8)
    top.set(xlabel="observation stamp [sim s]", ylabel="latency [ms]", title=title)
    bottom.set(xlabel="time between chunks [wall ms]", ylabel="chunks")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_snapshots(snapshots: list[Snapshot], out_dir: Path, camera: str = "top") -> list[Path]:
    """Each frame with both grippers' predicted paths drawn in (MuJoCo forward kinematics)."""
    import cv2

    from qvla_core.sim.overlay import ChunkProjector

    if not snapshots:
        return []
    projector = ChunkProjector(camera)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for snap in snapshots:
        img = projector.draw(snap.frame, snap.rows, snap.commanded)
        label = f"ep {snap.episode} t={snap.elapsed:.1f}s  orange: left, cyan: right  "
        label += "thin: predicted, thick: sent"
        cv2.putText(img, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        path = out_dir / f"episode{snap.episode}_t{snap.elapsed:04.1f}.png"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
