"""Instruction validation: stripping, empty, too long, control characters."""

from __future__ import annotations

import time

import pytest

from qvla_core.errors import ObservationError
from qvla_core.runtime.instruction import validate_instruction


def test_valid_instructions_are_stripped() -> None:
    assert validate_instruction("  pick up the red cube \n") == "pick up the red cube"
    assert validate_instruction("step 1:\tgrasp\r\nstep 2:\tlift") == "step 1:\tgrasp\nstep 2:\tlift"
    assert validate_instruction("räume den Tisch ab 🧹") == "räume den Tisch ab 🧹"
    assert validate_instruction("x" * 1000) == "x" * 1000


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
def test_empty_is_rejected(text: str) -> None:
    with pytest.raises(ObservationError, match="instruction is empty"):
        validate_instruction(text)


def test_too_long_says_the_length() -> None:
    with pytest.raises(ObservationError, match="1001 characters long; the limit is 1000"):
        validate_instruction("x" * 1001)
    with pytest.raises(ObservationError, match="limit is 10"):
        validate_instruction("eleven char", max_length=10)


def test_one_megabyte_is_rejected_quickly() -> None:
    text = "pick up the cube " * (1_000_000 // 17 + 1)
    start = time.perf_counter()
    with pytest.raises(ObservationError, match=r"\d+ characters long"):
        validate_instruction(text)
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize(
    ("char", "code"), [("\x00", "0000"), ("\x1b", "001B"), ("\r", "000D"), ("\x7f", "007F"), ("\x85", "0085")]
)
def test_control_characters_are_rejected(char: str, code: str) -> None:
    with pytest.raises(ObservationError, match=rf"control character U\+{code} at position 4"):
        validate_instruction(f"pick{char}up")


def test_non_string_is_rejected() -> None:
    with pytest.raises(ObservationError, match="must be a string"):
        validate_instruction(b"pick up")  # type: ignore[arg-type]
