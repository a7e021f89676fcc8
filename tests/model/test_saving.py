"""QwenVLAPolicy.save's backbone modes, LoRA adapters on load, and atomic writes (model/saving.py)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.embodiment import Embodiment
from qvla_core.errors import CheckpointError
from qvla_core.model import checkpoint as ckpt
from qvla_core.model import lora
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.policy import Observation

ObsFactory = Callable[..., Observation]


def adapted(ckpt_dir: Path, arm7: Embodiment) -> QwenVLAPolicy:
    """A policy whose backbone carries a LoRA adapter with non-zero (trained-looking) weights."""
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0)
    lora.apply_lora(policy.backbone, rank=4, alpha=8.0, dropout=0.0, target_modules=["q_proj", "v_proj"])
    torch.manual_seed(0)
    with torch.no_grad():
        for param in lora.lora_parameters(policy.backbone):
            param.normal_(0.0, 0.3)
    policy.backbone.eval()
    return policy


@pytest.mark.parametrize("mode", ["adapter", "full"])
def test_lora_adapter_saved_and_merged_on_load(
    mode: str, ckpt_dir: Path, arm7: Embodiment, obs_factory: ObsFactory, tmp_path: Path
) -> None:
    policy = adapted(ckpt_dir, arm7)
    obs = obs_factory(arm7)
    policy.reset()
    with_adapter = policy.infer(obs).actions
    saved = policy.save(tmp_path / "lora", backbone=mode)
    cfg = json.loads((saved / "policy_config.json").read_text())
    if mode == "adapter":
        assert (
            cfg["backbone_adapter"] == "backbone_lora"
            and (saved / "backbone_lora" / "adapter_config.json").is_file()
        )
        assert (
            cfg["backbone_path"] == str((ckpt_dir / "backbone").resolve())
            and not (saved / "backbone").exists()
        )
    else:
        assert "backbone_adapter" not in cfg and (saved / "backbone" / "model.safetensors").is_file()
    again = QwenVLAPolicy.from_checkpoint(saved, arm7, seed=0)
    assert lora.lora_parameters(again.backbone) == []  # merged: a plain model for inference
    np.testing.assert_allclose(again.infer(obs).actions, with_adapter, atol=1e-4)
    base = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0).infer(obs).actions
    assert not np.allclose(base, with_adapter, atol=1e-3)  # the adapter mattered
    policy.reset()
    # The live model kept the adapter unmerged ("full" merged and unmerged it: float rounding only).
    np.testing.assert_allclose(policy.infer(obs).actions, with_adapter, atol=1e-5)
    assert lora.lora_parameters(policy.backbone)


def test_modes_refuse_what_would_lose_weights(ckpt_dir: Path, arm7: Embodiment, tmp_path: Path) -> None:
    policy = adapted(ckpt_dir, arm7)
    with pytest.raises(CheckpointError, match="would drop the LoRA adapter"):
        policy.save(tmp_path / "x", backbone="reference")
    plain = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7)
    with pytest.raises(CheckpointError, match="needs a LoRA adapter"):
        plain.save(tmp_path / "x", backbone="adapter")
    with torch.no_grad():
        next(plain.backbone.parameters()).add_(0.01)  # e.g. an optimizer step on the backbone
    with pytest.raises(CheckpointError, match="weights changed since they were loaded"):
        plain.save(tmp_path / "x", backbone="reference")
    assert not (tmp_path / "x").exists()


def test_reference_and_link(
    ckpt_dir: Path, arm7: Embodiment, obs_factory: ObsFactory, tmp_path: Path
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0)
    obs = obs_factory(arm7)
    first = policy.infer(obs).actions
    ref = policy.save(tmp_path / "ref", backbone="reference")
    link = policy.save(tmp_path / "link", backbone="link")
    assert json.loads((ref / "policy_config.json").read_text())["backbone_path"] == str(ckpt_dir / "backbone")
    weights = link / "backbone" / "model.safetensors"
    assert weights.stat().st_ino == (ckpt_dir / "backbone" / "model.safetensors").stat().st_ino  # hard link
    for saved in (ref, link):
        np.testing.assert_array_equal(
            QwenVLAPolicy.from_checkpoint(saved, arm7, seed=0).infer(obs).actions, first
        )
    # Saving by reference onto the directory the backbone lives in links it instead (it is replaced).
    again = QwenVLAPolicy.from_checkpoint(link, arm7, seed=0)
    again.save(link, backbone="reference")
    assert "backbone_path" not in json.loads((link / "policy_config.json").read_text())
    np.testing.assert_array_equal(QwenVLAPolicy.from_checkpoint(link, arm7, seed=0).infer(obs).actions, first)


def test_full_disk_leaves_the_previous_checkpoint(
    ckpt_dir: Path, arm7: Embodiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = QwenVLAPolicy.from_checkpoint(ckpt_dir, arm7, seed=0)
    target = policy.save(tmp_path / "latest")
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def full_disk(root: Path, decoder: object) -> None:
        (root / ckpt.DECODER_FILE).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_decoder", full_disk)
    with torch.no_grad():
        next(policy.decoder.parameters()).add_(1.0)
    with pytest.raises(
        CheckpointError, match=r"no space left on the device .* the previous checkpoint there is unchanged"
    ):
        policy.save(target)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]  # no partial directory left
    with pytest.raises(CheckpointError, match="nothing was written"):
        policy.save(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    QwenVLAPolicy.from_checkpoint(target, arm7)  # still a whole checkpoint
