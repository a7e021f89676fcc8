"""QwenVLAPolicy end to end on a tiny qwen3_vl checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError, ObservationError
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation, Policy

ObsFactory = Callable[..., Observation]


@pytest.fixture(scope="module")
def aloha_policy(ckpt_dir: Path, aloha: Embodiment) -> QwenVLAPolicy:
    return QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=3)


@pytest.fixture(scope="module")
def arm7_policy(ckpt_dir: Path, arm7: Embodiment) -> QwenVLAPolicy:
    return QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=3)


@pytest.mark.parametrize("which", ["aloha", "arm7"])
def test_chunk_shape_names_dt_latency(
    which: str, aloha_policy: QwenVLAPolicy, arm7_policy: QwenVLAPolicy, obs_factory: ObsFactory
) -> None:
    policy = aloha_policy if which == "aloha" else arm7_policy
    e = policy.embodiment
    assert isinstance(policy, Policy)
    chunk = policy.infer(obs_factory(e))
    assert chunk.actions.shape == (e.horizon, len(e.action))
    assert chunk.actions.dtype == np.float32
    assert np.all(np.isfinite(chunk.actions))
    assert chunk.channel_names == e.action_names
    assert chunk.dt == pytest.approx(1.0 / e.control_rate_hz)
    assert chunk.observation_stamp == 12.5
    assert set(chunk.latency) == {"preprocess", "backbone", "denoise", "postprocess", "total"}
    assert all(v >= 0 for v in chunk.latency.values())
    assert chunk.latency["total"] >= chunk.latency["backbone"]


def test_masks_and_padded_layout(
    aloha_policy: QwenVLAPolicy, arm7_policy: QwenVLAPolicy, obs_factory: ObsFactory
) -> None:
    width = aloha_policy.config.decoder.action_width
    for policy, n in ((aloha_policy, 14), (arm7_policy, 8)):
        mask = policy._action_mask[0].cpu().numpy()
        assert mask.shape == (width,)
        assert mask[:n].all() and not mask[n:].any()
    # The image tokens in the prompt: one block per camera frame (arm7: front + 2 wrist frames).
    e = arm7_policy.embodiment
    obs = obs_factory(e)
    inputs = arm7_policy.processor(e, [obs.instruction], arm7_policy._image_tensors(obs))
    per_image = arm7_policy.processor.spec.tokens_per_image
    assert int(inputs["mm_token_type_ids"].sum()) == 3 * per_image
    assert inputs["image_grid_thw"].shape == (3, 3)
    state = arm7_policy._state_tensor([obs.state])
    assert state.shape == (1, arm7_policy.config.decoder.state_width)
    assert not state[0, 8:].any()


def test_same_seed_same_chunk(ckpt_dir: Path, aloha: Embodiment, obs_factory: ObsFactory) -> None:
    obs = obs_factory(aloha)
    a = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=7)
    b = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=7)
    first = a.infer(obs).actions
    np.testing.assert_array_equal(first, b.infer(obs).actions)
    second = a.infer(obs).actions
    assert not np.allclose(first, second)  # the generator advances within an episode
    a.reset()
    np.testing.assert_array_equal(first, a.infer(obs).actions)  # reset re-seeds
    c = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=8)
    assert not np.allclose(first, c.infer(obs).actions)


def test_output_depends_on_observation(aloha_policy: QwenVLAPolicy, obs_factory: ObsFactory) -> None:
    e = aloha_policy.embodiment
    aloha_policy.reset()
    base = aloha_policy.infer(obs_factory(e, seed=0)).actions
    aloha_policy.reset()
    other_images = aloha_policy.infer(obs_factory(e, seed=1)).actions
    aloha_policy.reset()
    other_text = aloha_policy.infer(obs_factory(e, seed=0, instruction="open the drawer")).actions
    assert not np.allclose(base, other_images)
    assert not np.allclose(base, other_text)


def test_save_load_identical(
    aloha_policy: QwenVLAPolicy, tmp_path: Path, aloha: Embodiment, obs_factory: ObsFactory
) -> None:
    obs = obs_factory(aloha)
    aloha_policy.reset()
    before = aloha_policy.infer(obs).actions
    saved = aloha_policy.save(tmp_path / "copy")
    again = QwenVLAPolicy.from_checkpoint(saved, aloha, seed=3)
    np.testing.assert_array_equal(before, again.infer(obs).actions)


def test_fp32_vs_bf16_close(ckpt_dir: Path, aloha: Embodiment, obs_factory: ObsFactory) -> None:
    obs = obs_factory(aloha)
    f32 = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=5).infer(obs).actions
    bf16 = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha, seed=5, dtype="bfloat16").infer(obs).actions
    span = np.array([c.upper - c.lower for c in aloha.action], dtype=np.float32)
    err = np.abs(f32 - bf16) / span
    assert err.max() < 0.05, err.max()
    assert not np.array_equal(f32, bf16)  # really ran in bf16


def test_inpainting_prefix_respected(arm7_policy: QwenVLAPolicy, obs_factory: ObsFactory) -> None:
    e = arm7_policy.embodiment
    k = 5
    rng = np.random.default_rng(1)
    lo = np.array([c.lower for c in e.action], dtype=np.float32)
    hi = np.array([c.upper for c in e.action], dtype=np.float32)
    prefix = (lo + (hi - lo) * rng.random((k, len(lo)))).astype(np.float32)
    obs = obs_factory(e, action_prefix=prefix)
    chunk = arm7_policy.infer(obs)
    np.testing.assert_allclose(chunk.actions[:k], prefix, atol=1e-4)
    # weight 0 leaves the rows free: same as no prefix with the same noise
    arm7_policy.reset()
    free = arm7_policy.infer(obs_factory(e)).actions
    arm7_policy.reset()
    zero = arm7_policy.infer(
        obs_factory(e, action_prefix=prefix, prefix_weight=np.zeros(k, np.float32))
    ).actions
    np.testing.assert_allclose(zero, free, atol=1e-5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda o, e: {**o, "images": {k: v for k, v in o["images"].items() if k != "wrist"}},
            "missing ['wrist']",
        ),
        (
            lambda o, e: {**o, "images": {**o["images"], "extra": o["images"]["front"]}},
            "unexpected ['extra']",
        ),
        (lambda o, e: {**o, "images": {**o["images"], "wrist": o["images"]["wrist"][:1]}}, "camera wrist"),
        (
            lambda o, e: {**o, "images": {**o["images"], "front": o["images"]["front"].astype(np.float32)}},
            "uint8",
        ),
        (
            lambda o, e: {**o, "images": {**o["images"], "front": o["images"]["front"][:, :, :64]}},
            "(1, 96, 128, 3)",
        ),
        (lambda o, e: {**o, "state": o["state"][:7]}, "state must have shape (8,)"),
        (lambda o, e: {**o, "state": np.where(np.arange(8) == 2, np.nan, o["state"])}, "['j3']"),
        (lambda o, e: {**o, "instruction": "  "}, "instruction"),
        (lambda o, e: {**o, "action_prefix": np.zeros((3, 7), np.float32)}, "action_prefix"),
        (lambda o, e: {**o, "action_prefix": np.zeros((17, 8), np.float32)}, "action_prefix"),
        (lambda o, e: {**o, "action_prefix": np.full((2, 8), np.inf, np.float32)}, "non-finite"),
        (
            lambda o, e: {
                **o,
                "action_prefix": np.zeros((2, 8), np.float32),
                "prefix_weight": np.array([1.0, 2.0]),
            },
            "prefix_weight",
        ),
    ],
)
def test_observation_errors(
    mutate: Callable[[dict[str, object], Embodiment], dict[str, object]],
    message: str,
    arm7_policy: QwenVLAPolicy,
    obs_factory: ObsFactory,
) -> None:
    good = obs_factory(arm7_policy.embodiment)
    fields = {
        k: getattr(good, k)
        for k in ("images", "state", "instruction", "stamp", "action_prefix", "prefix_weight")
    }
    bad = Observation(**mutate(fields, arm7_policy.embodiment))  # type: ignore[arg-type]
    with pytest.raises(ObservationError) as err:
        arm7_policy.infer(bad)
    assert message in str(err.value)


def test_with_embodiment_shares_modules(
    aloha_policy: QwenVLAPolicy, arm7: Embodiment, obs_factory: ObsFactory, ckpt_dir: Path
) -> None:
    other = aloha_policy.with_embodiment(arm7, seed=3)
    assert other.backbone is aloha_policy.backbone and other.decoder is aloha_policy.decoder
    fresh = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=3)
    obs = obs_factory(arm7)
    np.testing.assert_array_equal(other.infer(obs).actions, fresh.infer(obs).actions)


def test_conditioning_layer(
    ckpt_dir: Path, tmp_path: Path, arm7: Embodiment, obs_factory: ObsFactory
) -> None:
    import json
    import shutil

    root = tmp_path / "layer1"
    shutil.copytree(ckpt_dir, root)
    cfg_file = root / "policy_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["cond_layer"] = 1
    cfg_file.write_text(json.dumps(cfg))
    obs = obs_factory(arm7)
    mid = QwenVLAPolicy.from_checkpoint(root, arm7, seed=0)
    assert mid.backbone.cond_layer == 1
    last = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0)
    inputs = mid.processor(arm7, [obs.instruction], mid._image_tensors(obs))
    cond_mid, mask = mid.backbone(**inputs)
    cond_last, _ = last.backbone(**inputs)
    assert cond_mid.shape == cond_last.shape == (1, inputs["input_ids"].shape[1], 64)
    assert mask.dtype == torch.bool and bool(mask.all())
    assert not torch.allclose(cond_mid, cond_last)
    assert mid.infer(obs).actions.shape == (16, 8)
    cfg["cond_layer"] = 99
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="conditioning layer 99 out of range"):
        QwenVLAPolicy.from_checkpoint(root, arm7)
