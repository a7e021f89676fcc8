"""Small datasets written with our writer from made-up episodes (for the data-room tests).

Each frame's images are a smooth gradient that moves with the frame number (H.264 keeps such
images within a few grey levels), so a test can compare decoded pixels with what was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from qvla_core.data.writer import DatasetWriter
from qvla_core.embodiment import Embodiment, load_embodiment

REPO = Path(__file__).resolve().parents[2]

NAMES = tuple(
    f"{side}_{joint}"
    for side in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
)
CAMERAS = {"cam_high": (48, 64), "cam_low": (48, 64)}


def frame_image(episode: int, frame: int, camera: int, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    r = 128 + 90 * np.sin(x / 14.0 + frame * 0.3 + episode)
    g = 128 + 90 * np.sin(y / 10.0 - frame * 0.2 + camera)
    b = np.full(x.shape, 40.0 + 30 * camera + 20 * episode)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


@dataclass
class Written:
    """What was written, to compare the read-back with."""

    root: Path
    fps: float
    states: list[npt.NDArray[np.float32]] = field(default_factory=list)  # per episode (frames, 14)
    actions: list[npt.NDArray[np.float32]] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    start_stamps: list[float] = field(default_factory=list)
    cameras: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(CAMERAS))

    def image(self, episode: int, frame: int, camera: str) -> npt.NDArray[np.uint8]:
        return frame_image(episode, frame, list(self.cameras).index(camera), self.cameras[camera])


def write_dataset(
    root: Path,
    *,
    lengths: Sequence[int] = (30, 41),
    tasks: Sequence[str] = ("transfer the cube", "hand the cube over"),
    fps: float = 50.0,
    seed: int = 0,
    cameras: dict[str, tuple[int, int]] | None = None,
) -> Written:
    cams = CAMERAS if cameras is None else cameras
    rng = np.random.default_rng(seed)
    out = Written(root, fps, cameras=dict(cams))
    with DatasetWriter(
        root, fps=fps, robot_type="aloha", state_names=NAMES, action_names=NAMES, cameras=cams
    ) as writer:
        for ep, n in enumerate(lengths):
            states = rng.uniform(-1, 1, (n, len(NAMES))).astype(np.float32)
            actions = rng.uniform(-1, 1, (n, len(NAMES))).astype(np.float32)
            t0 = 100.0 + 7.3 * ep
            for k in range(n):
                images = {c: frame_image(ep, k, i, cams[c]) for i, c in enumerate(cams)}
                writer.add_frame(state=states[k], action=actions[k], images=images, timestamp=t0 + k / fps)
            task = tasks[ep % len(tasks)]
            assert writer.save_episode(task, success=ep % 2 == 0, metadata={"seed": 1000 + ep}) == ep
            out.states.append(states)
            out.actions.append(actions)
            out.tasks.append(task)
            out.start_stamps.append(t0)
    return out


def embodiment(
    cameras: dict[str, tuple[int, int]] | None = None,
    *,
    rate: float = 50.0,
    horizon: int = 8,
    history: dict[str, dict[str, float]] | None = None,
    channels: Sequence[str] = NAMES,
) -> Embodiment:
    """The ALOHA embodiment of config/robots/aloha.yaml with these cameras, rate and horizon."""
    base = load_embodiment(REPO / "config/robots/aloha.yaml").model_dump(mode="json")
    by_name = {c["name"]: c for c in base["state"]}
    picked = [
        by_name.get(n, {"name": n, "kind": "joint_position", "lower": -3.0, "upper": 3.0}) for n in channels
    ]
    cams = CAMERAS if cameras is None else cameras
    base.update(
        control_rate_hz=rate,
        horizon=horizon,
        state=picked,
        action=picked,
        cameras=[
            {
                "name": n,
                "height": h,
                "width": w,
                "history": (history or {}).get(n, {"frames": 1, "stride_s": 0.0}),
            }
            for n, (h, w) in cams.items()
        ],
    )
    return Embodiment.model_validate(base)
