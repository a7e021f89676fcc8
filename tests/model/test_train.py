"""linear_patch_embed: the vision patch embedding as a matrix product equals the Conv3d, in values and
gradients, for every backbone type, and leaves the state dict alone."""

from __future__ import annotations

import pytest
import torch

from qvla_core.model.backbone_configs import build_random_backbone, tiny_config
from qvla_core.model.tokenizer import SPECIAL_TOKENS
from qvla_core.model.train import linear_patch_embed


@pytest.mark.parametrize("backbone_type", ["qwen3_vl", "qwen2_5_vl", "qwen3_5"])
def test_linear_patch_embed_equals_conv(backbone_type: str) -> None:
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    model = build_random_backbone(tiny_config(backbone_type, 64, ids), torch.float32, seed=0)
    embed = model.model.visual.patch_embed
    c, t, p = embed.in_channels, embed.temporal_patch_size, embed.patch_size
    x = torch.randn(24, c * t * p * p)
    keys = sorted(model.state_dict())
    want = embed(x)
    (g_want,) = torch.autograd.grad(want.square().sum(), [embed.proj.weight])
    assert linear_patch_embed(model) == 1
    got = embed(x)
    (g_got,) = torch.autograd.grad(got.square().sum(), [embed.proj.weight])
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(g_got, g_want, atol=1e-4, rtol=1e-4)
    assert sorted(model.state_dict()) == keys
    assert linear_patch_embed(torch.nn.Linear(3, 3)) == 0
