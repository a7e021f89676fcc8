"""qwen2_5_vl and qwen3_5 tiny backbones load and infer; image patches match Hugging Face's.

qwen3_vl, the default tiny backbone, is covered by the other test modules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from qvla_core.cli import build_checkpoint as build_cli
from qvla_core.embodiment import Embodiment
from qvla_core.model.builder import build_checkpoint
from qvla_core.model.policy import QwenVLAPolicy
from qvla_core.model.processor import ImageSpec, images_to_patches
from qvla_core.policy import Observation


def test_qwen2_5_vl_via_cli(
    tmp_path: Path,
    arm7_yaml: Path,
    arm7: Embodiment,
    obs_factory: Callable[..., Observation],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "q25vl"
    rc = build_cli.main(
        [
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--backbone",
            "qwen2_5_vl",
            "--robot",
            str(arm7_yaml),
            "--image-size",
            "112x112",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == "qwen2_5_vl" and info["embodiments"] == ["panda7"]
    cfg = json.loads((out / "policy_config.json").read_text())
    assert cfg["backbone_type"] == "qwen2_5_vl" and cfg["image_size"] == [112, 112]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        assert (out / "backbone" / name).is_file(), name
    policy = QwenVLAPolicy.from_checkpoint(out, arm7, seed=0)
    chunk = policy.infer(obs_factory(arm7))
    assert chunk.actions.shape == (16, 8) and np.all(np.isfinite(chunk.actions))


def test_cli_needs_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml = str(Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml")
    rc = build_cli.main(["--out", str(tmp_path / "x"), "--robot", yaml])
    assert rc == 2
    assert "--stats-from-limits" in capsys.readouterr().err


def test_qwen3_5(tmp_path: Path, arm7: Embodiment, obs_factory: Callable[..., Observation]) -> None:
    out = tmp_path / "q35"
    build_checkpoint(
        out,
        preset="tiny",
        backbone_type="qwen3_5",
        embodiments=[arm7],
        image_size=(128, 128),
        randomize_head=True,
    )
    policy = QwenVLAPolicy.from_checkpoint(out, arm7, seed=0)
    assert policy.backbone.backbone_type == "qwen3_5"
    obs = obs_factory(arm7)
    a = policy.infer(obs)
    assert a.actions.shape == (16, 8) and np.all(np.isfinite(a.actions))
    policy.reset()
    np.testing.assert_array_equal(a.actions, policy.infer(obs).actions)


def test_patches_match_hf_image_processor() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = ImageSpec(height=56, width=84, patch_size=14)
    hf = Qwen2VLImageProcessorPil(
        **{k: v for k, v in spec.to_hf().items() if k not in ("image_processor_type", "qvla_image_size")}
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 56, 84, 3), dtype=np.uint8)
    ref = hf(list(images), return_tensors="np")
    ours = images_to_patches(torch.from_numpy(images), spec).numpy()
    assert ours.shape == ref["pixel_values"].shape
    np.testing.assert_allclose(ours, ref["pixel_values"], atol=1e-5)
    np.testing.assert_array_equal(ref["image_grid_thw"], [spec.grid, spec.grid])


@pytest.mark.parametrize(
    ("backbone", "hidden", "billions"),
    [("qwen3_5", 2560, 4.54), ("qwen3_vl", 2560, 4.44), ("qwen2_5_vl", 2048, 3.76)],
)
def test_full_shapes_construct_on_meta(backbone: str, hidden: int, billions: float) -> None:
    """The full preset's backbone shapes build (on the meta device: no memory, no time)."""
    from qvla_core.model.backbone_configs import build_random_backbone, full_config
    from qvla_core.model.tokenizer import SPECIAL_TOKENS, train_tokenizer

    tok = train_tokenizer()
    ids = {t: int(tok.convert_tokens_to_ids(t)) for t in SPECIAL_TOKENS}
    model = build_random_backbone(full_config(backbone, ids), torch.bfloat16, seed=0, device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert model.config.text_config.hidden_size == hidden
    assert n / 1e9 == pytest.approx(billions, abs=0.01)
