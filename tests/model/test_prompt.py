"""The embodiment-aware prompt and the qvla-prompt CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from qvla_core.cli import prompt as prompt_cli
from qvla_core.embodiment import Embodiment
from qvla_core.model.prompt import build_messages, render_prompt
from qvla_core.model.tokenizer import CHAT_TEMPLATE


def _check_fields(text: str, e: Embodiment, instruction: str) -> None:
    assert e.name in text
    assert e.body in text
    assert e.control_convention in text
    assert f"{e.control_rate_hz:g} Hz" in text
    assert f"Horizon: {e.horizon} actions" in text
    assert f"Task: {instruction}" in text
    for name in e.action_names:
        assert name in text
    for cam in e.cameras:
        assert f"Camera {cam.name}" in text
    n_images = sum(c.history.frames for c in e.cameras)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == n_images
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n")


def test_prompt_contains_every_field(aloha: Embodiment, arm7: Embodiment) -> None:
    for e in (aloha, arm7):
        _check_fields(render_prompt(CHAT_TEMPLATE, e, "stack the blocks"), e, "stack the blocks")


def test_frame_history_labels(arm7: Embodiment) -> None:
    user = build_messages(arm7, "x")[1]["content"]
    labels = [p["text"] for p in user if p["type"] == "text" and p["text"].startswith("Camera")]
    assert labels == ["Camera front, now:\n", "Camera wrist, 0.2 s ago:\n", "Camera wrist, now:\n"]


def test_checkpoint_template_matches_builtin(ckpt_dir: Path, aloha: Embodiment) -> None:
    from qvla_core.model.processor import QwenVLAProcessor

    processor = QwenVLAProcessor.from_pretrained(ckpt_dir / "backbone", (128, 128))
    assert processor.prompt_text(aloha, "fold") == render_prompt(CHAT_TEMPLATE, aloha, "fold")


def test_cli_prints_prompt(capsys: pytest.CaptureFixture[str], aloha: Embodiment, ckpt_dir: Path) -> None:
    yaml = str(Path(__file__).resolve().parents[2] / "config" / "robots" / "aloha.yaml")
    assert prompt_cli.main(["--robot", yaml, "--instruction", "transfer the cube"]) == 0
    out = capsys.readouterr().out
    _check_fields(out, aloha, "transfer the cube")
    assert (
        prompt_cli.main(
            ["--robot", yaml, "--instruction", "transfer the cube", "--checkpoint", str(ckpt_dir)]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == out
    assert "tokens" in captured.err
    assert prompt_cli.main(["--robot", "/nonexistent.yaml", "--instruction", "x"]) == 2
