"""The shared-prefix forward equals the full forward, in values and gradients, and its inference memo
is invalidated by a weight update."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.model.builder import build_checkpoint
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.prefix_cache import shared_prefix_length
from qvla_core.policy import Observation


def _inputs(policy: QwenVLAPolicy, observations: list[Observation]) -> dict[str, torch.Tensor]:
    images = [torch.from_numpy(o.images[n]) for o in observations for n in policy.embodiment.camera_names]
    return policy.processor(policy.embodiment, [o.instruction for o in observations], images)


def _full(policy: QwenVLAPolicy, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    policy.backbone.shared_prefix = False
    try:
        return policy.backbone(**inputs)[0]
    finally:
        policy.backbone.shared_prefix = True


@pytest.fixture(scope="module")
def qwen25_dir(tmp_path_factory: pytest.TempPathFactory, aloha: Embodiment) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tiny_qwen2_5_vl"
    build_checkpoint(
        out, preset="tiny", backbone_type="qwen2_5_vl", embodiments=[aloha], stats_from_limits=True,
        image_size=(112, 112), randomize_head=True,
    )  # fmt: skip
    return out


@pytest.mark.parametrize("which", ["qwen3_vl", "qwen2_5_vl"])
def test_shared_prefix_matches_full_forward_and_gradients(
    which: str,
    ckpt_dir: Path,
    qwen25_dir: Path,
    aloha: Embodiment,
    obs_factory: Callable[..., Observation],
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir if which == "qwen3_vl" else qwen25_dir, aloha)
    assert policy.backbone.shared_prefix
    # Two instruction lengths: rows are right-padded, the prefix is still shared.
    texts = ["pick", "hand the cube over"]
    observations = [obs_factory(aloha, seed=i, instruction=texts[i % 2]) for i in range(3)]
    inputs = _inputs(policy, observations)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    prefix = shared_prefix_length(ids, mask, policy.backbone.image_token_id)
    assert prefix > inputs["input_ids"].shape[1] // 2  # the embodiment text is most of the prompt
    valid = inputs["attention_mask"].bool()
    shared = policy.backbone(**inputs)[0]
    full = _full(policy, inputs)
    assert torch.allclose(shared[valid], full[valid], atol=1e-5)
    params = [p for p in policy.backbone.parameters() if p.requires_grad]
    g_shared = torch.autograd.grad(shared[valid].square().mean(), params, allow_unused=True)
    g_full = torch.autograd.grad(full[valid].square().mean(), params, allow_unused=True)
    compared = 0
    for a, b in zip(g_shared, g_full, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
            compared += 1
    assert compared > 10


def test_inference_memo_reused_then_invalidated_by_a_weight_update(
    ckpt_dir: Path, aloha: Embodiment, obs_factory: Callable[..., Observation]
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha)
    inputs = _inputs(policy, [obs_factory(aloha, seed=0)])
    with torch.no_grad():
        first = policy.backbone(**inputs)[0]
        entry = policy.backbone.prefix_memo.get(policy.backbone.prefix_memo._entry.key)  # type: ignore[union-attr]
        assert entry is not None
        again = policy.backbone(**inputs)[0]
        assert policy.backbone.prefix_memo._entry is entry  # reused, not recomputed
        assert torch.equal(first, again)
        for p in policy.backbone.parameters():
            p.add_(0.01)  # what an optimizer step does: in place
        updated = policy.backbone(**inputs)[0]
        assert policy.backbone.prefix_memo._entry is not entry
        assert torch.allclose(updated, _full(policy, inputs), atol=1e-5)
        assert not torch.allclose(updated, first, atol=1e-3)


def test_qwen3_5_and_inner_layer_conditioning_run_the_whole_sequence(
    tmp_path: Path, aloha: Embodiment, ckpt_dir: Path
) -> None:
    out = tmp_path / "tiny_qwen3_5"
    build_checkpoint(
        out, preset="tiny", backbone_type="qwen3_5", embodiments=[aloha], stats_from_limits=True,
        image_size=(64, 64), weights=True,
    )  # fmt: skip
    assert not QwenVLAPolicy.from_checkpoint(out, aloha).backbone.shared_prefix
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, aloha)
    from qvla_core.model.backbone import Backbone

    inner_layer = Backbone(policy.backbone.model, policy.backbone.backbone_type, cond_layer=1)
    assert not inner_layer.shared_prefix
