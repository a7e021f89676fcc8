"""Bad input stops the run with a message naming the dataset, episode, key or value, and never
leaves a broken checkpoint as the latest."""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.cli import train as cli
from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.errors import TrainingError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.training.datasets import DatasetSpec
from qvla_core.training.loop import train
from qvla_core.training.session import RunSpec
from qvla_core.training.synthetic import SyntheticSource

from .conftest import quick_config, robot_yaml, write_robot


def _other(tmp_path: Path, **kw: object) -> Embodiment:
    return load_embodiment(write_robot(tmp_path, robot_yaml(**kw)))  # type: ignore[arg-type]


def _fails(make_run: Callable[..., RunSpec], source: SyntheticSource, toy: Embodiment) -> str:
    with pytest.raises(TrainingError) as err:
        train(make_run(sources=[DatasetSpec(source, toy, "data/cube")]))
    return str(err.value)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"joints": 3}, "data/cube: observation.state has 4 channels ['j0', 'j1', 'j2', 'gripper'] but "
                        "the robot YAML has 3 ['j0', 'j1', 'gripper']"),
        ({"cameras": [{"name": "wrist", "width": 64, "height": 48}]},
         "data/cube: cameras ['wrist'] but the robot YAML has ['top']"),
        ({"rate": 30.0}, "data/cube: fps 30 but the robot YAML's control_rate_hz is 10"),
        ({"name": "panda"}, "data/cube: embodiment 'panda' but the robot YAML is 'toy'"),
    ],
)  # fmt: skip
def test_dataset_features_must_match_the_robot_yaml(
    make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path, kw: dict[str, object], needle: str
) -> None:
    recorded_for = _other(tmp_path, **kw)
    assert needle in _fails(make_run, SyntheticSource(recorded_for, episodes=2, frames=4), toy)


def test_channel_names_must_match(make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path) -> None:
    data = robot_yaml()
    data["embodiment"]["action"] = [dict(c) for c in data["embodiment"]["action"]]
    data["embodiment"]["action"][1]["name"] = "elbow"
    recorded_for = load_embodiment(write_robot(tmp_path, data))
    msg = _fails(make_run, SyntheticSource(recorded_for, episodes=2, frames=4), toy)
    assert "data/cube: action has 3 channels ['j0', 'elbow', 'gripper'] but the robot YAML has 3" in msg


def test_nan_in_the_data_names_episode_frame_and_channel(
    make_run: Callable[..., RunSpec], toy: Embodiment
) -> None:
    def action(state: np.ndarray) -> np.ndarray:
        return np.array([state[0], np.nan if state[0] > 0.1 else state[1], 0.5], dtype=np.float32)

    class NanFrames(SyntheticSource):
        @property
        def stats(self) -> dict[str, dict[str, list[float]]]:  # finite (as a NaN-skipping reader writes)
            return SyntheticSource(toy, episodes=2, frames=6).stats

    source = NanFrames(toy, episodes=2, frames=6, action_fn=action)
    assert any(np.isnan(ep.action[:, 1]).any() for ep in source._data), "the data must contain a NaN"
    msg = _fails(make_run, source, toy)
    named = re.fullmatch(
        r"data/cube \((?:train|val)\) episode (\d+) frame (\d+): action has non-finite values \(nan\) in "
        r"channels \['j1'\]",
        msg,
    )
    assert named, msg
    episode, frame = int(named.group(1)), int(named.group(2))
    assert np.isnan(source._data[episode].action[frame:, 1]).any()  # that frame's chunk holds the NaN
    # NaN in the dataset's statistics is named too
    plain = SyntheticSource(toy, episodes=2, frames=6, action_fn=action)
    assert "data/cube: stats 'action.q01' are not finite for channels ['j1']" in _fails(make_run, plain, toy)


def test_empty_dataset(make_run: Callable[..., RunSpec], toy: Embodiment) -> None:
    msg = _fails(make_run, SyntheticSource(toy, episodes=0, frames=4), toy)
    assert msg == "data/cube: the dataset is empty (0 episodes, 0 frames)"


def test_a_checkpoint_whose_backbone_does_not_fit_the_decoder(
    make_run: Callable[..., RunSpec], toy_ckpt: Path, tmp_path: Path, toy: Embodiment,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    broken = tmp_path / "broken"
    shutil.copytree(toy_ckpt, broken)
    cfg = json.loads((broken / ckpt.POLICY_CONFIG).read_text())
    cfg["decoder"]["cond_dim"] = 96
    (broken / ckpt.POLICY_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(TrainingError, match=rf"--checkpoint {broken}: .*cond_dim 96"):
        train(make_run(checkpoint=broken))
    # the command line reports it and exits 2
    monkeypatch.setattr(
        cli, "open_dataset", lambda root, e, cameras, cache: SyntheticSource(e, episodes=2, frames=4)
    )
    robot = write_robot(tmp_path, robot_yaml())
    args = [
        "--checkpoint",
        str(broken),
        "--dataset",
        "data/cube",
        "--robot",
        str(robot),
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"\nqvla-train: error: --checkpoint {broken}:" in err and "cond_dim 96" in err


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 9000000000 bytes."),
    ],
)
def test_out_of_memory_on_the_first_step_says_which_batch_size_to_try(
    make_run: Callable[..., RunSpec], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def boom(*args: object, **kw: object) -> torch.Tensor:
        raise error

    monkeypatch.setattr(QwenVLAPolicy, "action_loss", boom)
    with pytest.raises(TrainingError) as err:
        train(make_run(quick_config(train="all", **{"schedule.batch_size": 8})))
    msg = str(err.value)
    assert msg.startswith(
        "out of memory at step 1 with batch size 8 (train: all, device cpu): try --batch-size 4"
    )
    assert "--train decoder" in msg


def test_full_disk_while_saving_leaves_the_previous_checkpoint_latest(
    make_run: Callable[..., RunSpec], monkeypatch: pytest.MonkeyPatch, toy: Embodiment
) -> None:
    real = ckpt.save_decoder
    calls = []

    def save(root: Path, decoder: torch.nn.Module) -> None:
        calls.append(root)
        if len(calls) == 2:  # the second checkpoint (step 4) runs out of space half-way
            (root / "decoder.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(root, decoder)  # type: ignore[arg-type]

    monkeypatch.setattr(ckpt, "save_decoder", save)
    run = make_run()
    with pytest.raises(TrainingError) as err:
        train(run)
    msg = str(err.value)
    assert "no space left on the device while saving" in msg and "step_0000004" in msg
    assert f"{run.out / 'latest'} still points at step_0000002" in msg and "--resume" in msg
    assert (run.out / "latest").resolve().name == "step_0000002"
    assert [p.name for p in (run.out / "checkpoints").iterdir()] == ["step_0000002"]  # no partial left
    QwenVLAPolicy.from_checkpoint(run.out, toy).infer(run.datasets[0].source[0].observation)


def test_output_directory_rules(make_run: Callable[..., RunSpec], toy: Embodiment) -> None:
    run = make_run()
    with pytest.raises(TrainingError, match=r"--resume: .* has no checkpoint to resume"):
        train(make_run(resume=True))
    train(run)
    with pytest.raises(TrainingError, match=r"is not empty .*add --resume to continue it"):
        train(make_run())
    other = SyntheticSource(toy, episodes=3, frames=12, seed=9)
    with pytest.raises(TrainingError, match="--resume: the datasets changed since"):
        train(make_run(sources=[DatasetSpec(other, toy, "toy_data")], resume=True))
