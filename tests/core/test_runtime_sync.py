"""Approximate-time sync: freshest set within slop and age, bad stamps, and a brute-force check."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from qvla_core.errors import ObservationError
from qvla_core.runtime.sync import ApproximateTimeSync

INPUTS = ["cam_high", "cam_low", "joints"]


def make(slop: float = 0.05, max_age: float = 0.25, queue: int = 10) -> ApproximateTimeSync[str]:
    return ApproximateTimeSync(INPUTS, slop_s=slop, max_age_s=max_age, queue_size=queue)


def test_nothing_until_every_input_arrived() -> None:
    sync = make()
    sync.add("cam_high", 1.00, "h", now=1.0)
    sync.add("joints", 1.00, "j", now=1.0)
    assert sync.latest(now=1.0) is None
    sync.add("cam_low", 1.01, "l", now=1.01)
    got = sync.latest(now=1.02)
    assert got is not None
    assert got.payloads == {"cam_high": "h", "cam_low": "l", "joints": "j"}
    assert got.stamp == 1.01 and got.oldest_stamp == 1.00 and got.spread == pytest.approx(0.01)


def test_freshest_set_with_fast_joint_states() -> None:
    sync = make(slop=0.02)
    for k in range(10):  # cameras at 30 Hz, cam_low 10 ms behind cam_high
        sync.add("cam_high", 1.0 + k / 30, f"h{k}", now=2.0)
        sync.add("cam_low", 1.01 + k / 30, f"l{k}", now=2.0)
    for k in range(50):  # joints at 200 Hz
        sync.add("joints", 1.0 + k / 200, f"j{k}", now=2.0)
    got = sync.latest(now=1.35)
    assert got is not None
    # Joints end at j49 (1.245), older than the newest cameras (h9 1.300, l9 1.310), so the set
    # ends near it: h8 (1.2667) with l7 (1.2433) spans 0.023 > slop; h7 (1.2333), l7, j49 fits.
    assert got.payloads == {"cam_high": "h7", "cam_low": "l7", "joints": "j49"}


def test_too_old_or_too_spread_gives_none() -> None:
    sync = make(slop=0.05, max_age=0.25)
    sync.add("cam_high", 1.0, "h", now=1.0)
    sync.add("cam_low", 1.0, "l", now=1.0)
    sync.add("joints", 1.2, "j", now=1.2)
    assert sync.latest(now=1.2) is None  # spread 0.2 > slop
    sync.add("joints", 1.3, "j2", now=1.3)
    assert sync.latest(now=1.3) is None
    sync.add("cam_high", 1.31, "h2", now=1.31)
    sync.add("cam_low", 1.32, "l2", now=1.32)
    got = sync.latest(now=1.35)
    assert got is not None and got.payloads["joints"] == "j2"
    assert sync.latest(now=1.30 + 0.25 + 0.001) is None  # oldest member now older than max_age


def test_bad_stamps_are_rejected() -> None:
    sync = make()
    with pytest.raises(ObservationError, match="unknown input cam_side"):
        sync.add("cam_side", 1.0, "x", now=1.0)
    with pytest.raises(ObservationError, match=r"0\.500 s in the future"):
        sync.add("cam_high", 1.5, "x", now=1.0)
    sync.add("cam_high", 1.04, "ok", now=1.0)  # within the 50 ms tolerance
    with pytest.raises(ObservationError, match="out of order"):
        sync.add("cam_high", 1.03, "x", now=1.1)
    with pytest.raises(ObservationError, match="not finite"):
        sync.add("cam_high", math.inf, "x", now=1.1)
    sync.add("cam_high", 1.04, "again", now=1.1)  # same stamp again replaces
    sync.add("cam_low", 1.04, "l", now=1.1)
    sync.add("joints", 1.04, "j", now=1.1)
    got = sync.latest(now=1.1)
    assert got is not None and got.payloads["cam_high"] == "again"


def test_queue_size_bounds_history() -> None:
    sync = make(queue=2)
    for k in range(5):
        sync.add("cam_high", 1.0 + k * 0.1, k, now=2.0)
    sync.add("cam_low", 1.0, "old", now=2.0)
    sync.add("joints", 1.0, "old", now=2.0)
    # cam_high kept only 1.3 and 1.4, nothing within slop of 1.0.
    assert sync.latest(now=1.1) is None


def brute_force(queues: dict[str, list[float]], slop: float, oldest_allowed: float) -> float | None:
    """Largest achievable minimum stamp over all valid combinations."""
    best = None
    for combo in itertools.product(*queues.values()):
        lo, hi = min(combo), max(combo)
        if hi - lo <= slop and lo >= oldest_allowed and (best is None or lo > best):
            best = lo
    return best


def test_matches_brute_force_on_random_streams() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        sync = make(slop=0.03, max_age=0.3, queue=5)
        queues: dict[str, list[float]] = {}
        for name in INPUTS:
            stamps = np.sort(rng.uniform(0.0, 0.4, size=rng.integers(1, 8))).tolist()
            for s in stamps:
                sync.add(name, s, s, now=0.4)
            queues[name] = sorted(set(stamps))[-5:]
        got = sync.latest(now=0.4)
        best = brute_force(queues, 0.03, 0.4 - 0.3)
        if best is None:
            assert got is None
            continue
        assert got is not None
        assert got.oldest_stamp == best
        assert got.spread <= 0.03 + 1e-12
        for name in INPUTS:  # each member is the newest message that fits
            fits = [s for s in queues[name] if best <= s <= best + 0.03]
            assert got.stamps[name] == max(fits)


def test_latest_is_cheap() -> None:
    names = [f"in{i}" for i in range(5)]
    sync: ApproximateTimeSync[int] = ApproximateTimeSync(names, slop_s=0.05, max_age_s=1.0, queue_size=10)
    for k in range(10):
        for i, name in enumerate(names):
            sync.add(name, 1.0 + k * 0.033 + i * 0.004, k, now=2.0)
    assert sync.latest(now=1.4) is not None
    start = time.perf_counter()
    for _ in range(1000):
        sync.latest(now=1.4)
    per_call = (time.perf_counter() - start) / 1000
    assert per_call < 200e-6, f"{per_call * 1e6:.1f} us per call"
