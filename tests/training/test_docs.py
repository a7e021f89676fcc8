"""docs/training.md's configuration reference is the one the code generates (regenerate it with
``python -m qvla_core.training.config``, pasted between the markers)."""

from __future__ import annotations

from pathlib import Path

from qvla_core.training.config import reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"
BEGIN, END = "<!-- config reference -->", "<!-- /config reference -->"


def test_config_reference_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert section.strip() == reference_markdown().strip(), (
        "docs/training.md's config reference is stale: paste `python -m qvla_core.training.config` "
        "between the markers"
    )
