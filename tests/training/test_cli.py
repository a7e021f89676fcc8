"""qvla-train end to end on a LeRobot v3.0 dataset written by our writer: the command line, the
reader, training, and the output loaded as the policy node loads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qvla_core.cli import train as cli
from qvla_core.data.writer import DatasetWriter
from qvla_core.embodiment import Embodiment
from qvla_core.model.policy import QwenVLAPolicy


def write_toy_dataset(root: Path, toy: Embodiment, episodes: int = 3, frames: int = 10) -> Path:
    rng = np.random.default_rng(0)
    names = toy.action_names
    cam = toy.cameras[0]
    with DatasetWriter(
        root, fps=toy.control_rate_hz, robot_type=toy.name, state_names=names, action_names=names,
        cameras={cam.name: (cam.height, cam.width)},
    ) as writer:  # fmt: skip
        for _ in range(episodes):
            state = rng.uniform(-0.5, 0.5, (frames, len(names))).astype(np.float32)
            state[:, -1] = rng.uniform(0, 1, frames)
            for k in range(frames):
                image = np.full((cam.height, cam.width, 3), 20 * k, dtype=np.uint8)
                action = state[min(k + 1, frames - 1)]
                writer.add_frame(
                    state=state[k], action=action, images={cam.name: image}, timestamp=k / toy.control_rate_hz
                )
            writer.save_episode("transfer the cube")
    return root


def test_qvla_train_on_a_lerobot_dataset(
    tmp_path: Path, toy_ckpt: Path, toy_yaml: Path, toy: Embodiment, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_toy_dataset(tmp_path / "data", toy)
    out = tmp_path / "run"
    config = tmp_path / "train.yaml"
    config.write_text("validation: {episodes: 1, every_steps: 2}\ncheckpoint: {every_steps: 2}\n")
    args = ["--checkpoint", str(toy_ckpt), "--dataset", str(data), "--robot", str(toy_yaml),
            "--out", str(out), "--config", str(config), "--batch-size", "4",
            "--set", "schedule.warmup_steps=1", "--no-progress"]  # fmt: skip
    assert cli.main([*args, "--steps", "3"]) == 0
    err = capsys.readouterr().err
    assert "qvla-train: done:" in err and f"checkpoint:={out.resolve()}" in err
    assert "validation loss" in err  # log lines reach the terminal
    policy = QwenVLAPolicy.from_checkpoint(out, toy)
    record = json.loads((out / "policy_config.json").read_text())["training"]
    assert record["command"][:3] == ["qvla-train", "--checkpoint", str(toy_ckpt)]
    assert record["datasets"][0]["path"] == str(data) and len(record["datasets"][0]["fingerprint"]) == 16
    assert record["config"]["schedule"]["steps"] == 3 and record["step"] == 3
    from qvla_core.data.dataset import LeRobotDataset

    sample = LeRobotDataset(data, toy)[4]
    assert policy.infer(sample.observation).actions.shape == (toy.horizon, 3)
    # --resume with more steps continues from step 3
    assert cli.main([*args, "--steps", "5", "--resume"]) == 0
    assert json.loads((out / "policy_config.json").read_text())["training"]["step"] == 5


def test_cli_errors(
    tmp_path: Path, toy_ckpt: Path, toy_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--checkpoint", str(toy_ckpt), "--robot", str(toy_yaml), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--dataset", str(tmp_path / "missing")]) == 2
    assert str(tmp_path / "missing") in capsys.readouterr().err
    assert (
        cli.main(
            [*base, "--dataset", "a", "--dataset", "b", "--robot", str(toy_yaml), "--robot", str(toy_yaml)]
        )
        == 2
    )
    assert "2 --dataset but 3 --robot" in capsys.readouterr().err
    assert cli.main([*base, "--dataset", "a", "--set", "schedule.lr=-1"]) == 2
    assert "schedule.lr: Input should be greater than 0 (got -1)" in capsys.readouterr().err


def test_log_lines_reach_the_terminal_after_import_launch() -> None:
    """`import launch` (ROS 2) makes every logger created after it non-propagating; qvla-train's
    logging set-up must still get the qvla.* lines (in the full test run launch is imported first)."""
    import logging

    class NonPropagating(logging.Logger):  # what launch.logging.LaunchLogger does
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.propagate = False

    previous = logging.getLoggerClass()
    logging.setLoggerClass(NonPropagating)
    try:
        child = logging.getLogger("qvla.train.test_after_launch")
    finally:
        logging.setLoggerClass(previous)
    assert not child.propagate
    cli.setup_logging()
    assert child.propagate
