"""Tiny robots, datasets and checkpoints for the trainer tests (built locally, seconds).

``toy``: 2 joints + gripper, horizon 4, one 48x64 camera, 10 Hz. The checkpoint is the tiny
qwen3_vl preset at 32x32 images (one image token): the trainer's logic, not the model's
quality, is under test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.model.builder import build_checkpoint
from qvla_core.training.config import TrainConfig, load_train_config
from qvla_core.training.datasets import DatasetSpec
from qvla_core.training.session import RunSpec
from qvla_core.training.synthetic import SyntheticSource


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread: the tiny models' ops are too small to split, and on a shared 2-core machine
    two threads spin-wait on each other (a tiny step took 10x longer under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def robot_yaml(
    name: str = "toy",
    *,
    body: str = "a two-joint arm with a gripper on a table",
    horizon: int = 4,
    rate: float = 10.0,
    joints: int = 2,
    cameras: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    channels = [
        {"name": f"j{i}", "kind": "joint_position", "lower": -1.0, "upper": 1.0} for i in range(joints)
    ] + [{"name": "gripper", "kind": "gripper", "lower": 0.0, "upper": 1.0}]
    return {
        "schema_version": 1,
        "embodiment": {
            "name": name,
            "body": body,
            "control_convention": f"{joints} absolute joint positions in radians then the gripper opening",
            "control_rate_hz": rate,
            "horizon": horizon,
            "state": channels,
            "action": channels,
            "cameras": cameras or [{"name": "top", "width": 64, "height": 48}],
        },
    }


def write_robot(directory: Path, data: dict[str, Any]) -> Path:
    path = directory / f"{data['embodiment']['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def toy_yaml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_robot(tmp_path_factory.mktemp("robots"), robot_yaml())


@pytest.fixture(scope="session")
def toy(toy_yaml: Path) -> Embodiment:
    return load_embodiment(toy_yaml)


@pytest.fixture(scope="session")
def toy_ckpt(tmp_path_factory: pytest.TempPathFactory, toy: Embodiment) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny_toy"
    build_checkpoint(
        out, preset="tiny", backbone_type="qwen3_vl", embodiments=[toy], stats_from_limits=True,
        image_size=(32, 32), instructions=["transfer the cube"],
    )  # fmt: skip
    return out


def quick_config(**overrides: Any) -> TrainConfig:
    """A few steps, small batches, validation and checkpoints often."""
    items = {
        "schedule.steps": 4, "schedule.batch_size": 4, "schedule.warmup_steps": 1, "validation.episodes": 1,
        "validation.every_steps": 2, "validation.max_frames": 8, "validation.action_samples": 4,
        "checkpoint.every_steps": 2, "log_every": 1, **overrides,
    }  # fmt: skip
    return load_train_config(None, [f"{k}={v}" for k, v in items.items()])


@pytest.fixture
def make_run(tmp_path: Path, toy_ckpt: Path, toy: Embodiment) -> Callable[..., RunSpec]:
    def make(
        config: TrainConfig | None = None, sources: list[DatasetSpec] | None = None, **kw: Any
    ) -> RunSpec:
        if sources is None:
            sources = [DatasetSpec(SyntheticSource(toy, episodes=3, frames=12), toy, "toy_data")]
        kw.setdefault("out", tmp_path / "out")
        kw.setdefault("checkpoint", toy_ckpt)
        return RunSpec(
            datasets=sources, config=config or quick_config(), progress=False, command=["test"], **kw
        )

    return make
