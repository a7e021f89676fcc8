"""The convolutional vision stem (model/vision_stem.py) and the ``small_conv`` preset built on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model.builder import build_checkpoint
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.processor import HALF, ImageSpec, images_to_patches
from qvla_core.model.vision_stem import STEM_KEY, ConvVisionStem, StemConfig
from qvla_core.policy import Observation

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def conv_ckpt(tmp_path_factory: pytest.TempPathFactory, aloha: Embodiment) -> Path:
    out = tmp_path_factory.mktemp("conv") / "small_conv"
    build_checkpoint(
        out, preset="small_conv", backbone_type="qwen3_vl", embodiments=[aloha], stats_from_limits=True,
        image_size=(64, 96), randomize_head=True,
    )  # fmt: skip
    return out


def test_patches_back_to_images_and_tokens() -> None:
    """The stem undoes the processor's patchify exactly and gives one token per merged patch."""
    spec = ImageSpec(height=64, width=96, patch_size=16, merge_size=2, temporal_patch_size=2,
                     image_mean=HALF, image_std=HALF)  # fmt: skip
    images = torch.randint(0, 256, (3, 64, 96, 3), dtype=torch.uint8)
    patches = images_to_patches(images, spec)
    stem = ConvVisionStem(StemConfig(keypoints=4))
    grid = torch.tensor([[1, 4, 6]] * 3)
    back = stem.images_from_patches(patches, grid)
    expected = (images.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(back, expected)
    out = stem(patches, grid)
    assert out.pooler_output.shape == (3 * 2 * 3, 64)
    assert out["deepstack_features"] == []
    # token order is row-major over the merged grid: changing the bottom-right corner of image 1
    # changes its last token most
    moved = images.clone()
    moved[1, 32:, 64:] = 255 - moved[1, 32:, 64:]
    with torch.no_grad():
        diff = (stem(images_to_patches(moved, spec), grid).pooler_output - out.pooler_output).abs().sum(-1)
    assert int(diff.argmax()) == 6 + 5
    assert float(diff[:6].sum()) == 0.0 and float(diff[12:].sum()) == 0.0


def test_unequal_grids_and_bad_shapes_are_refused() -> None:
    stem = ConvVisionStem(StemConfig())
    with pytest.raises(ValueError, match="equally sized"):
        stem.images_from_patches(torch.zeros(24 + 48, 1536), torch.tensor([[1, 4, 6], [1, 8, 6]]))
    with pytest.raises(ValueError, match="do not fit"):
        stem.images_from_patches(torch.zeros(10, 1536), torch.tensor([[1, 4, 6]]))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"type": "resnet"}, "type"),
        ({"widths": [32, 64, 128]}, "widths"),
        ({"widths": [30, 64, 128, 128]}, "widths"),
        ({"patch_size": 14}, "stride 32"),
        ({"kernel": 3}, "unknown key"),
        ([1, 2], "expected an object"),
    ],
)
def test_bad_stem_config(data: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        StemConfig.from_dict(data)


def test_small_conv_preset_records_the_stem(conv_ckpt: Path) -> None:
    config = json.loads((conv_ckpt / "backbone" / "config.json").read_text())
    stem = config["vision_config"][STEM_KEY]
    assert stem["type"] == "conv" and stem["out_hidden"] == config["text_config"]["hidden_size"]
    weights = json.loads((conv_ckpt / "policy_config.json").read_text())
    assert weights["extra"]["preset"] == "small_conv"


def test_gradients_reach_the_stem(
    conv_ckpt: Path, aloha: Embodiment, obs_factory: Callable[..., Observation]
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(conv_ckpt, aloha, seed=0)
    stem = policy.backbone.model.model.visual
    assert isinstance(stem, ConvVisionStem)
    obs = [obs_factory(aloha, seed=i) for i in range(2)]
    actions = [np.zeros((aloha.horizon, len(aloha.action)), dtype=np.float32) for _ in obs]
    policy.backbone.train()
    loss = policy.training_loss(obs, actions, generator=torch.Generator().manual_seed(0), train_backbone=True)
    loss.backward()
    for name in ("stage1.0.weight", "stage3.0.weight", "merge.weight"):
        grad = dict(stem.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_save_load_round_trip(
    conv_ckpt: Path, tmp_path: Path, aloha: Embodiment, obs_factory: Callable[..., Observation]
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(conv_ckpt, aloha, seed=0)
    with torch.no_grad():  # change the stem so a reload that re-initialised it would differ
        policy.backbone.model.model.visual.merge.bias.add_(0.5)
    policy.save(tmp_path / "saved", backbone="full")
    again = QwenVLAPolicy.from_checkpoint(tmp_path / "saved", aloha, seed=0)
    for (name, a), (_, b) in zip(
        policy.backbone.model.state_dict().items(), again.backbone.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
    policy.reset()
    obs = obs_factory(aloha, seed=3)
    np.testing.assert_allclose(policy.infer(obs).actions, again.infer(obs).actions, rtol=1e-5, atol=1e-5)


def test_missing_stem_weights_name_the_directory(conv_ckpt: Path, tmp_path: Path, aloha: Embodiment) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(conv_ckpt, broken)
    weights = load_file(str(broken / "backbone" / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if "visual.merge" not in k},
        str(broken / "backbone" / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"backbone.*missing.*visual\.merge"):
        QwenVLAPolicy.from_checkpoint(broken, aloha)


def test_vision_tower_checkpoints_load_as_before(tmp_path: Path, aloha: Embodiment) -> None:
    """No ``qvla_stem`` (every older checkpoint, every Qwen release): the model's own vision tower."""
    build_checkpoint(
        tmp_path / "small", preset="small", backbone_type="qwen3_vl", embodiments=[aloha],
        stats_from_limits=True, image_size=(64, 96),
    )  # fmt: skip
    assert (
        STEM_KEY
        not in json.loads((tmp_path / "small" / "backbone" / "config.json").read_text())["vision_config"]
    )
    policy = QwenVLAPolicy.from_checkpoint(tmp_path / "small", aloha)
    assert type(policy.backbone.model.model.visual).__name__ == "Qwen3VLVisionModel"


def test_committed_demo_checkpoint_still_loads() -> None:
    from qvla_core.embodiment import load_embodiment

    demo = REPO / "models" / "aloha_transfer_cube"
    policy = QwenVLAPolicy.from_checkpoint(demo, load_embodiment(demo / "robot.yaml"))
    config = json.loads((demo / "backbone" / "config.json").read_text())
    want = ConvVisionStem if STEM_KEY in config["vision_config"] else torch.nn.Module
    assert isinstance(policy.backbone.model.model.visual, want)


def test_decoder_reads_from_the_first_image_on(conv_ckpt: Path, aloha: Embodiment) -> None:
    """``cond: from_images`` (new stems): the embodiment prompt before the images is masked out of the
    decoder's conditioning; ``all`` (stems recorded without the key) keeps every token."""
    policy = QwenVLAPolicy.from_checkpoint(conv_ckpt, aloha)
    assert policy.backbone.cond_from_images
    images = [torch.zeros(1, 64, 96, 3, dtype=torch.uint8) for _ in aloha.cameras]
    inputs = policy.processor(aloha, ["pick up the cube"], images, policy.device)
    _, mask = policy.backbone(**inputs)
    first = int((inputs["input_ids"][0] == policy.backbone.image_token_id).nonzero()[0])
    assert first > 20 and not mask[0, :first].any() and mask[0, first:].all()
    policy.backbone.cond_from_images = False
    _, mask = policy.backbone(**inputs)
    assert mask.all()
    assert StemConfig.from_dict({"type": "conv"}).cond == "all"
    assert StemConfig().cond == "from_images"
