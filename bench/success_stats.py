"""Success-rate statistics and seed ranges shared by the benches (standard library only, so the
LeRobot venv's scripts can import it too)."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate ((0, 1) for no episodes)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def seeds_range(text: str) -> list[int]:
    """``"2000-2049"`` -> [2000, ..., 2049]; ``"7"`` -> [7]."""
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))
