"""The random-checkpoint presets have the shapes their documentation promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qvla_core.embodiment import Embodiment
from qvla_core.model.builder import build_checkpoint


@pytest.mark.parametrize(
    ("preset", "vision_width", "decoder"), [("tiny", 32, (64, 2)), ("small", 64, (128, 4))]
)
def test_cpu_presets(
    tmp_path: Path, aloha: Embodiment, preset: str, vision_width: int, decoder: tuple[int, int]
) -> None:
    info = build_checkpoint(
        tmp_path / preset, preset=preset, backbone_type="qwen3_vl", embodiments=[aloha],
        stats_from_limits=True, image_size=(192, 256), weights=False,
    )  # fmt: skip
    config = json.loads((tmp_path / preset / "backbone" / "config.json").read_text())
    assert config["vision_config"]["hidden_size"] == vision_width
    assert config["text_config"]["hidden_size"] == 64
    policy_config = json.loads((tmp_path / preset / "policy_config.json").read_text())
    assert (policy_config["decoder"]["hidden"], policy_config["decoder"]["depth"]) == decoder
    assert policy_config["dtype"] == "float32"
    assert info["tokens_per_image"] == 48  # 192x256, patch 16, merge 2
    if preset == "small":  # what builder.py's docstring states
        assert 2.0e6 < info["backbone_params"] + info["decoder_params"] < 2.4e6
