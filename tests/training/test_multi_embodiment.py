"""Several robots in one run: one checkpoint, each embodiment with its own widths, horizon, rate,
cameras and norm stats, and each embodiment's prompt selecting its behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qvla_core.embodiment import Embodiment, load_embodiment
from qvla_core.model.builder import build_checkpoint
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation
from qvla_core.training.datasets import DatasetSpec
from qvla_core.training.loop import train
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
