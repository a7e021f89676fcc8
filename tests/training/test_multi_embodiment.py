"""Several robots in one run: one checkpoint, each embodiment with its own widths, horizon, rate,
cameras and norm stats, and each embodiment's prompt selecting its behaviour."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.errors import CheckpointError, ConfigError, TrainingError
from qvla_core.model.builder import build_checkpoint
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation
from qvla_core.training.datasets import DatasetSpec
from qvla_core.training.loop import part_shares, train
from qvla_core.training.sampler import StepSampler
from qvla_core.training.session import RunSpec
from qvla_core.training.synthetic import SyntheticSource

from .conftest import quick_config, robot_yaml, write_robot


def test_one_checkpoint_for_robots_of_different_shapes(
    make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path
) -> None:
    cameras = [
        {"name": "front", "width": 64, "height": 48},
        {"name": "wrist", "width": 32, "height": 32, "history": {"frames": 2, "stride_s": 0.1}},
    ]
    arm3 = load_embodiment(
        write_robot(tmp_path, robot_yaml("arm3", joints=3, horizon=6, rate=20.0, cameras=cameras))
    )
    sources = [
        DatasetSpec(SyntheticSource(toy, episodes=3, frames=8), toy, "data/toy"),
        DatasetSpec(SyntheticSource(arm3, episodes=3, frames=10, seed=1), arm3, "data/arm3"),
    ]
    run = make_run(quick_config(**{"schedule.steps": 8, "validation.every_steps": 8}), sources=sources)
    train(run)
    log = [json.loads(line) for line in (run.out / "training" / "log.jsonl").read_text().splitlines()]
    assert {e["embodiment"] for e in log if e["kind"] == "train"} == {"toy", "arm3"}
    assert set(log[-3]["per_embodiment"]) == {"toy", "arm3"}  # validation per embodiment
    for e, spec in ((toy, sources[0]), (arm3, sources[1])):
        policy = QwenVLAPolicy.from_checkpoint(run.out, e)  # one checkpoint, loaded per robot
        chunk = policy.infer(spec.source[2].observation)
        assert chunk.actions.shape == (e.horizon, len(e.action)) and chunk.dt == 1.0 / e.control_rate_hz
        assert policy.norm_stats[e.name].action.q01 == spec.source.stats["action"]["q01"]


def test_the_prompt_selects_the_behaviour(tmp_path: Path) -> None:
    """Same images, same states; the right action depends only on the embodiment text. Both datasets
    have the same norm stats (each holds both values, in opposite proportions), so only the prompt can
    tell the policy which to do; swapping the prompt swaps the sampled actions."""
    lefty = load_embodiment(
        write_robot(tmp_path, robot_yaml("lefty", body="an arm that reaches left", horizon=2))
    )
    righty = load_embodiment(
        write_robot(tmp_path, robot_yaml("righty", body="an arm that reaches right", horizon=2))
    )
    build_checkpoint(
        tmp_path / "ckpt", preset="tiny", backbone_type="qwen3_vl", embodiments=[lefty],
        stats_from_limits=True, image_size=(32, 32),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    image = {"top": np.full((40, 48, 64, 3), 128, np.uint8)}
    states = [rng.uniform(-0.8, 0.8, (40, 3)).astype(np.float32) for _ in range(4)]

    def source(e: Embodiment, value: float) -> SyntheticSource:
        episodes = []
        for k, s in enumerate(states):
            sign = np.where(np.random.default_rng(k).random(40) < 0.9, 1.0, -1.0)[:, None]
            actions = sign * np.array([value, -value, 0.0]) + np.array([0.0, 0.0, 0.5])
            episodes.append((image, s, actions.astype(np.float32)))
        return SyntheticSource.from_arrays(e, episodes)

    config = quick_config(**{
        "schedule.steps": 300, "schedule.batch_size": 32, "schedule.lr": 1e-3, "schedule.warmup_steps": 20,
        "validation.episodes": 0, "checkpoint.every_steps": 1000, "log_every": 50,
    })  # fmt: skip
    specs = [
        DatasetSpec(source(lefty, 0.5), lefty, "left"),
        DatasetSpec(source(righty, -0.5), righty, "right"),
    ]
    out = tmp_path / "out"
    train(RunSpec(checkpoint=tmp_path / "ckpt", datasets=specs, out=out, config=config, progress=False))
    left = QwenVLAPolicy.from_checkpoint(out, lefty, seed=0)
    right = left.with_embodiment(righty)  # the same weights, the other prompt
    assert left.norm_stats["lefty"] == left.norm_stats["righty"]
    for state in ([0.5, -0.5, 0.5], [-0.4, 0.6, 0.5]):
        obs = Observation(images={"top": image["top"][:1]}, state=np.array(state, np.float32),
                          instruction="transfer the cube", stamp=0.0)  # fmt: skip
        a = np.mean([left.infer(obs).actions[0] for _ in range(8)], axis=0)
        b = np.mean([right.infer(obs).actions[0] for _ in range(8)], axis=0)
        assert a[0] > 0.25 and a[1] < -0.25, a  # lefty: +0.5, -0.5
        assert b[0] < -0.25 and b[1] > 0.25, b  # righty: the other way round


def test_mix_gives_each_embodiment_its_share_of_steps() -> None:
    """data.mix: an embodiment's share of the steps, split between its datasets by size."""
    shares = part_shares(["a", "a", "b"], [900, 100, 300], {"a": 1.0, "b": 1.0})
    assert shares == [0.9, 0.1, 1.0]
    sampler = StepSampler([900, 100, 300], batch_size=2, seed=0, start=0, stop=4000, shares=shares)
    parts = Counter(batch[0][0] for batch in sampler)
    assert abs(parts[2] / 4000 - 0.5) < 0.03 and abs(parts[0] / 4000 - 0.45) < 0.03, parts
    assert part_shares(["a", "b"], [900, 300], None) is None  # in proportion to size
    proportional = Counter(b[0][0] for b in StepSampler([900, 300], 2, 0, 0, 4000))
    assert abs(proportional[1] / 4000 - 0.25) < 0.03, proportional


def test_mix_in_a_run_and_its_errors(
    make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path
) -> None:
    """A small robot's dataset (24 frames beside 400) gets the steps the mix gives it, and a mix that
    does not name exactly the run's embodiments is refused before anything trains."""
    arm3 = load_embodiment(write_robot(tmp_path, robot_yaml("arm3", joints=3, horizon=6, rate=20.0)))
    sources = [
        DatasetSpec(SyntheticSource(toy, episodes=3, frames=8), toy, "data/toy"),
        DatasetSpec(SyntheticSource(arm3, episodes=40, frames=10, seed=1), arm3, "data/arm3"),
    ]
    steps = {"schedule.steps": 40, "validation.episodes": 0, "checkpoint.every_steps": 40, "log_every": 4}
    run = make_run(quick_config(**steps, **{"data.mix": "{toy: 0.8, arm3: 0.2}"}), sources=sources)
    train(run)
    log = [json.loads(line) for line in (run.out / "training" / "log.jsonl").read_text().splitlines()]
    entries = [x for x in log if x["kind"] == "train"]
    by: Counter[str] = Counter()
    for x in entries:  # each log line: its window's loss per robot (a joint run's curve per embodiment)
        by.update(x["steps_by_embodiment"])
        n, losses = x["steps_by_embodiment"], x["loss_by_embodiment"]
        assert sum(n.values()) == 4 and set(n) == set(losses)
        assert abs(sum(losses[e] * n[e] for e in n) / 4 - x["loss"]) < 1e-5
    assert by["toy"] >= 24 and by["arm3"] >= 2, by  # in proportion to frames toy would get ~2 of 40
    for mix, named in (
        ("{toy: 1.0}", "['toy']"),
        ("{toy: 1, arm3: 1, aloha: 1}", "['aloha', 'arm3', 'toy']"),
    ):
        bad = make_run(quick_config(**{"data.mix": mix}), sources=sources, out=tmp_path / f"bad{len(mix)}")
        with pytest.raises(TrainingError, match=re.escape(f"data.mix names {named}")):
            train(bad)
    with pytest.raises(ConfigError, match="positive share"):
        quick_config(**{"data.mix": "{toy: 0.0, arm3: 1.0}"})


def test_a_checkpoint_drives_the_robots_its_training_saw(
    make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path
) -> None:
    """Two robots trained together: both load. Fine-tuned on one of them: the other is refused at load
    (naming it), though its stats are still in norm_stats.json; qvla-train itself may add robots."""
    arm3 = load_embodiment(write_robot(tmp_path, robot_yaml("arm3", joints=3, horizon=6, rate=20.0)))
    toy_data = DatasetSpec(SyntheticSource(toy, episodes=3, frames=8), toy, "data/toy")
    arm3_data = DatasetSpec(SyntheticSource(arm3, episodes=3, frames=8), arm3, "data/arm3")
    both = make_run(quick_config(), sources=[toy_data, arm3_data])
    train(both)
    for e in (toy, arm3):
        assert QwenVLAPolicy.from_checkpoint(both.out, e).embodiment.name == e.name
    one = make_run(quick_config(), sources=[toy_data], checkpoint=both.out, out=tmp_path / "toy_only")
    train(one)
    assert "arm3" in json.loads((one.out / "norm_stats.json").read_text(encoding="utf-8"))
    with pytest.raises(CheckpointError, match=r"policy_config\.json training\.datasets: .*'arm3'.*\('toy'\)"):
        QwenVLAPolicy.from_checkpoint(one.out, arm3)
