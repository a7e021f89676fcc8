"""Validate the task instruction before it reaches the prompt."""

from __future__ import annotations

import re

from qvla_core.errors import ObservationError

# C0 and C1 control characters and DEL, except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def validate_instruction(text: str, max_length: int = 1000) -> str:
    """Return the instruction stripped of surrounding whitespace (CRLF normalised to LF).

    Raises ObservationError for a non-string, an empty or all-whitespace text, a text
    longer than ``max_length`` characters, or control characters other than newline/tab.
    """
    if not isinstance(text, str):
        raise ObservationError(f"instruction must be a string, got {type(text).__name__}")
    cleaned = text.replace("\r\n", "\n").strip()
    if not cleaned:
        raise ObservationError("instruction is empty")
    # Length first: a huge input is rejected before it is scanned any further.
    if len(cleaned) > max_length:
        raise ObservationError(f"instruction is {len(cleaned)} characters long; the limit is {max_length}")
    bad = _CONTROL.search(cleaned)
    if bad is not None:
        raise ObservationError(
            f"instruction contains control character U+{ord(bad.group()):04X} at position {bad.start()}"
        )
    return cleaned
