"""A short run end to end: the output is a checkpoint the policy loads unchanged, with the run's
provenance, stats from the data, a log and a loss curve; --resume continues exactly where an
uninterrupted run would be; Ctrl-C saves first; the features cache gives the cached loss; the bf16
autocast branch runs on a CPU; the lr schedule warms up then decays."""

from __future__ import annotations

import itertools
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.training.config import Schedule
from qvla_core.training.loop import Loop, train
from qvla_core.training.optim import lr_factor
from qvla_core.training.session import RunSpec, Session, autocast_dtype, episode_ranges

from .conftest import quick_config


def _decoder_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "decoder.safetensors"))


def test_run_writes_a_loadable_checkpoint(make_run: Callable[..., RunSpec], toy: Embodiment) -> None:
    run = make_run()
    result = train(run)
    out = run.out
    assert result.step == 4 and not result.interrupted and 0 <= result.data_wait_share < 1
    policy = QwenVLAPolicy.from_checkpoint(out, toy)  # what the policy node does with checkpoint:=OUT
    source = run.datasets[0].source
    chunk = policy.infer(source[3].observation)
    assert chunk.actions.shape == (4, 3)
    # norm stats from the data, not from the limits any more
    stats = policy.norm_stats["toy"].action
    assert stats.q01 == pytest.approx(source.stats["action"]["q01"])
    config = json.loads((out / "policy_config.json").read_text())
    record = config["training"]
    assert record["command"] == ["test"] and record["step"] == 4 and record["git_commit"]
    assert record["datasets"][0]["fingerprint"] == source.fingerprint
    held = record["datasets"][0]["episodes_validation"]
    assert len(held) == 1
    train_eps = sorted(set(source.episodes) - set(held))
    assert record["datasets"][0]["episodes_train"] == episode_ranges(train_eps)
    assert episode_ranges([7, 0, 1, 2, 4, 5, 9]) == "0-2,4-5,7,9" and episode_ranges([]) == ""
    # the trained decoder is what OUT holds, and it changed
    base = _decoder_state(run.checkpoint)
    trained = _decoder_state(out)
    assert any(not torch.equal(base[k], trained[k]) for k in base)
    # log, plot, checkpoints (kept: 2), latest
    kinds = [json.loads(line)["kind"] for line in (out / "training" / "log.jsonl").read_text().splitlines()]
    assert kinds.count("train") == 4 and kinds.count("validation") == 2 and "end" in kinds
    assert (out / "training" / "loss.png").stat().st_size > 1000
    assert (out / "latest").resolve().name == "step_0000004"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    # a frozen backbone is hard-linked, not copied
    weights = next((out / "latest" / "backbone").glob("*.safetensors"))
    assert weights.stat().st_nlink >= 2


def test_resume_continues_exactly(make_run: Callable[..., RunSpec], tmp_path: Path) -> None:
    quiet = {"schedule.steps": 6, "validation.every_steps": 100, "checkpoint.every_steps": 100}
    straight = make_run(quick_config(**quiet), out=tmp_path / "straight")
    train(straight)
    first = make_run(quick_config(**quiet), out=tmp_path / "resumed")

    def stop_at_3(step: int, loss: float) -> None:
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    assert train(first, on_step=stop_at_3).step == 3
    second = make_run(quick_config(**quiet), out=tmp_path / "resumed", resume=True)
    result = train(second)
    assert result.step == 6 and result.steps_run == 3
    a, b = _decoder_state(tmp_path / "straight"), _decoder_state(tmp_path / "resumed")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    lines = (tmp_path / "resumed" / "training" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines if json.loads(x)["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_saves_a_checkpoint_then_stops(make_run: Callable[..., RunSpec]) -> None:
    run = make_run(quick_config(**{"schedule.steps": 50, "checkpoint.every_steps": 100}))
    # What the process had before (SIG_IGN where the tests run as a background job of a shell).
    before = signal.getsignal(signal.SIGINT)

    def interrupt(step: int, loss: float) -> None:
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    result = train(run, on_step=interrupt)
    assert result.interrupted and result.step == 3
    assert (run.out / "latest").resolve().name == "step_0000003"
    state = torch.load(run.out / "latest" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_features_cache_gives_the_same_loss(make_run: Callable[..., RunSpec], tmp_path: Path) -> None:
    losses = {}
    for cached in (True, False):
        run = make_run(quick_config(features_cache=cached), out=tmp_path / f"c{cached}")
        session = Session.open(run)
        assert bool(session.train_features) is cached
        batch = next(Loop(session)._loader(0))
        session.noise_gen.manual_seed(0)
        with torch.no_grad():
            policy = session.policies[batch.embodiment]
            if cached:
                cond, mask = session.train_features[0].lookup(batch.rows)
            else:
                cond, mask = policy.condition(batch.image_list(), batch.instructions)
            losses[cached] = float(
                policy.action_loss(
                    cond, mask, batch.state, batch.actions, batch.action_is_pad, generator=session.noise_gen
                )
            )
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_autocast_bf16_branch_runs_on_the_cpu(make_run: Callable[..., RunSpec]) -> None:
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("auto", "cpu") is None and autocast_dtype("float32", "cuda") is None
    run = make_run(quick_config(train="all", **{"schedule.steps": 2}))
    run.autocast_device_type = "cuda"  # decide as on a GPU; run on the CPU
    session = Session.open(run)
    assert session.autocast_to is torch.bfloat16
    seen: list[torch.dtype] = []
    hook = session.policy.decoder.action_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss, grad_norm = Loop(session).step(next(Loop(session)._loader(0)))
    hook.remove()
    assert seen == [torch.bfloat16] and torch.isfinite(loss) and grad_norm is not None
    assert all(p.dtype == torch.float32 for p in session.trainable)  # weights stay fp32


def test_lr_schedule() -> None:
    s = Schedule(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, s) == pytest.approx(0.1) and lr_factor(9, s) == pytest.approx(1.0)
    assert lr_factor(10, s) == pytest.approx(1.0)
    assert lr_factor(55, s) == pytest.approx(0.55)
    assert lr_factor(100, s) == pytest.approx(0.1)
    values = [lr_factor(i, s) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_augmented_run_trains_everything(make_run: Callable[..., RunSpec], toy: Embodiment) -> None:
    cfg = quick_config(train="all", **{"augment.shift": 0.1, "augment.brightness": 0.2, "schedule.steps": 2})
    run = make_run(cfg)
    before = QwenVLAPolicy.from_checkpoint(run.checkpoint, toy).backbone.model.state_dict()
    train(run)
    after = QwenVLAPolicy.from_checkpoint(run.out, toy).backbone.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (
        not (run.out / "latest" / "backbone" / "model.safetensors").stat().st_nlink > 1
    )  # saved, not linked


def test_state_noise_reaches_the_decoder_only_in_the_state_channels(
    make_run: Callable[..., RunSpec], tmp_path: Path
) -> None:
    run = make_run(quick_config(**{"features_cache": True, "augment.state_noise": 0.3}), out=tmp_path / "n")
    session = Session.open(run)
    assert session.train_features  # state noise leaves the features cache on
    batch = next(Loop(session)._loader(0))
    policy = session.policies[batch.embodiment]
    cond, mask = session.train_features[0].lookup(batch.rows)
    seen: list[torch.Tensor] = []
    original = policy.decoder.loss

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(args[2].detach().clone())  # type: ignore[attr-defined]
        return original(*args, **kwargs)  # type: ignore[arg-type]

    policy.decoder.loss = spy  # type: ignore[method-assign]
    with torch.no_grad():
        for noise in (0.0, 0.3):
            session.noise_gen.manual_seed(0)
            policy.action_loss(
                cond, mask, batch.state, batch.actions, batch.action_is_pad,
                generator=session.noise_gen, state_noise=noise,
            )  # fmt: skip
    clean, noisy = seen
    n = len(policy.embodiment.state)
    diff = noisy - clean
    assert torch.equal(diff[:, n:], torch.zeros_like(diff[:, n:]))  # padded channels untouched
    assert 0.15 < float(diff[:, :n].std()) < 0.45  # ~0.3 in normalised units
