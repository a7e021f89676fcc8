"""Tiny Qwen-VLA checkpoints built once per test session (no downloads).

Default backbone for the tests (the fastest tiny one on a CPU): qwen3_vl at 128x128 images
(16 tokens per image); qwen2_5_vl and qwen3_5 have their own tests.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.model.builder import build_checkpoint
from qvla_core.policy import Observation

REPO = Path(__file__).resolve().parents[2]
ALOHA_YAML = REPO / "config" / "robots" / "aloha.yaml"

torch.set_num_threads(2)

# A second embodiment with other widths, horizon, cameras and frame history.
ARM7_YAML = """
schema_version: 1
embodiment:
  name: panda7
  body: a single 7-DoF Franka Panda arm with a parallel-jaw gripper on a table
  control_convention: 7 absolute joint positions in radians then the gripper opening from 0 to 1
  control_rate_hz: 15.0
  horizon: 16
  state:
    - {name: j1, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j2, kind: joint_position, lower: -1.76, upper: 1.76}
    - {name: j3, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j4, kind: joint_position, lower: -3.07, upper: -0.07}
    - {name: j5, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j6, kind: joint_position, lower: -0.02, upper: 3.75}
    - {name: j7, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: gripper, kind: gripper, lower: 0.0, upper: 1.0}
  action:
    - {name: j1, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j2, kind: joint_position, lower: -1.76, upper: 1.76}
    - {name: j3, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j4, kind: joint_position, lower: -3.07, upper: -0.07}
    - {name: j5, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: j6, kind: joint_position, lower: -0.02, upper: 3.75}
    - {name: j7, kind: joint_position, lower: -2.9, upper: 2.9}
    - {name: gripper, kind: gripper, lower: 0.0, upper: 1.0}
  cameras:
    - {name: front, width: 128, height: 96}
    - {name: wrist, width: 64, height: 64, history: {frames: 2, stride_s: 0.2}}
  normalization:
    state:
      mode: mean_std
      mean: [0, 0, 0, -1.5, 0, 1.8, 0, 0.5]
      std: [1, 1, 1, 0.5, 1, 0.8, 1, 0.5]
    action:
      mode: mean_std
      mean: [0, 0, 0, -1.5, 0, 1.8, 0, 0.5]
      std: [1, 1, 1, 0.5, 1, 0.8, 1, 0.5]
"""


@pytest.fixture(scope="session")
def aloha() -> Embodiment:
    return load_embodiment(ALOHA_YAML)


@pytest.fixture(scope="session")
def arm7_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("robots") / "panda7.yaml"
    path.write_text(ARM7_YAML, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def arm7(arm7_yaml: Path) -> Embodiment:
    return load_embodiment(arm7_yaml)


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory, aloha: Embodiment, arm7: Embodiment) -> Path:
    """qwen3_vl tiny checkpoint with stats for aloha (from limits) and panda7 (its YAML)."""
    out = tmp_path_factory.mktemp("ckpt") / "tiny_qwen3_vl"
    build_checkpoint(
        out,
        preset="tiny",
        backbone_type="qwen3_vl",
        embodiments=[aloha, arm7],
        stats_from_limits=True,
        seed=0,
        image_size=(128, 128),
        randomize_head=True,
    )
    return out


def make_observation(
    embodiment: Embodiment, seed: int = 0, instruction: str = "pick up the cube", **kw: object
) -> Observation:
    rng = np.random.default_rng(seed)
    images = {
        c.name: rng.integers(0, 256, (c.history.frames, c.height, c.width, 3), dtype=np.uint8)
        for c in embodiment.cameras
    }
    lo = np.array([c.lower for c in embodiment.state], dtype=np.float32)
    hi = np.array([c.upper for c in embodiment.state], dtype=np.float32)
    state = (lo + (hi - lo) * rng.random(len(lo))).astype(np.float32)
    return Observation(images=images, state=state, instruction=instruction, stamp=12.5, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def obs_factory() -> Callable[..., Observation]:
    return make_observation


@pytest.fixture(scope="session")
def hf_release(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``hf_release(backbone_type)``: a tiny directory laid out as that Qwen release (built once)."""
    from tests.model.hf_release import write_release

    built: dict[str, Path] = {}

    def get(backbone_type: str) -> Path:
        if backbone_type not in built:
            root = tmp_path_factory.mktemp("releases") / backbone_type
            built[backbone_type] = write_release(root, backbone_type)
        return built[backbone_type]

    return get
