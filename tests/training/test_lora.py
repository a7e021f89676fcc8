"""LoRA on the backbone (model/lora.py + train: lora): only the adapters and the decoder train, the
checkpoint carries the adapter next to the referenced base, loads merged, and resumes exactly."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model import lora
from qvla_core.model.backbone import tiny_config
from qvla_core.model.policy import QwenVLAPolicy, build_random_backbone
from qvla_core.model.tokenizer import SPECIAL_TOKENS
from qvla_core.training.loop import train
from qvla_core.training.session import RunSpec

from .conftest import quick_config


@pytest.mark.parametrize("backbone_type", ["qwen3_vl", "qwen2_5_vl", "qwen3_5"])
def test_targets_are_the_language_models_linear_layers(backbone_type: str) -> None:
    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    model = build_random_backbone(tiny_config(backbone_type, 64, ids), torch.float32, seed=0)
    found = lora.matching_modules(model, ["q_proj", "v_proj", "in_proj_qkv", "down_proj"])
    assert found and all(name.startswith("model.language_model.layers.") for name in found)
    assert not any("visual" in name for name in found)
    if backbone_type == "qwen3_5":  # Gated DeltaNet layers have their own projections
        assert any(name.endswith("linear_attn.in_proj_qkv") for name in found)


def test_only_adapters_and_decoder_train(toy_ckpt: Path, toy: Embodiment) -> None:
    policy = QwenVLAPolicy.from_checkpoint(toy_ckpt, toy)
    lora.apply_lora(policy.backbone, rank=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "o_proj"])
    trainable = [n for n, p in policy.backbone.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert len(lora.lora_parameters(policy.backbone)) == len(trainable)
    with pytest.raises(CheckpointError, match=r"LoRA: none of the layers \['qkv_typo'\] exist"):
        lora.apply_lora(
            QwenVLAPolicy.from_checkpoint(toy_ckpt, toy).backbone,
            rank=4, alpha=8.0, dropout=0.0, target_modules=["qkv_typo"],
        )  # fmt: skip


def test_lora_run_checkpoint_and_resume(
    make_run: Callable[..., RunSpec], toy: Embodiment, tmp_path: Path
) -> None:
    settings = {
        "schedule.steps": 6,
        "schedule.lr": 1e-2,
        "validation.every_steps": 100,
        "checkpoint.every_steps": 100,
    }
    straight = make_run(quick_config(train="lora", **settings), out=tmp_path / "straight")
    train(straight)
    out = straight.out
    config = json.loads((out / "policy_config.json").read_text())
    assert config["backbone_adapter"] == "backbone_lora"
    assert config["backbone_path"] == str((straight.checkpoint / "backbone").resolve())
    assert (out / "backbone_lora" / "adapter_config.json").is_file() and not (
        out / "latest" / "backbone"
    ).exists()
    merged = QwenVLAPolicy.from_checkpoint(out, toy).backbone.model.state_dict()
    base = QwenVLAPolicy.from_checkpoint(straight.checkpoint, toy).backbone.model.state_dict()
    changed = [k for k in base if "q_proj" in k and not torch.equal(base[k], merged[k])]
    assert changed  # the trained adapter is in the loaded (merged) weights
    # interrupted at step 3, resumed: the same adapter and decoder as the straight run
    resumed = make_run(quick_config(train="lora", **settings), out=tmp_path / "resumed")

    def stop(step: int, loss: float) -> None:
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    assert train(resumed, on_step=stop).step == 3
    train(make_run(quick_config(train="lora", **settings), out=tmp_path / "resumed", resume=True))
    for name in ("backbone_lora/adapter_model.safetensors", "decoder.safetensors"):
        a, b = load_file(str(tmp_path / "straight" / name)), load_file(str(tmp_path / "resumed" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-6), (name, key)
