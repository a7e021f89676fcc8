"""The clock jumping back under use_sim_time (a sim reset, a looped bag), injected through real DDS
into the installed policy node. A module of its own: its node runs on simulated time, and must not
share a DDS domain with the wall-clock rig of test_faults.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.ros.fake_robot import to_sec
from tests.ros.test_faults import close_rig, faulted_on, start_rig

pytestmark = pytest.mark.ros


def test_the_clock_jumping_back_under_sim_time_holds_and_recovers(
    tiny_checkpoint: Path, config_dir: Path, tmp_path: Path
) -> None:
    rig = start_rig(tiny_checkpoint, config_dir, tmp_path, sim_clock=True, use_sim_time="true")
    assert rig.sim_clock is not None
    clock = rig.sim_clock
    try:
        rig.wait_commands(4, 0.0, timeout=60.0)
        t_jump = time.time()
        clock.jump_back(20.0)  # the sim was reset and its clock restarted
        t_hold = rig.wait_hold(t_jump, "the clock jumped back")
        assert t_hold - t_jump <= 0.25, f"hold {t_hold - t_jump:.3f} s after the jump"
        faulted_on(rig, 0.0, "clock jumped back", recovers_fast=True)
        rig.wait_commands(3, t_hold + 0.05)  # inputs on the new timeline: it recovers
        for _, _, msg in rig.commands(t_hold + 0.05):
            start = to_sec(msg.header.stamp)
            assert abs(start - clock.now()) < 2.0, f"a trajectory stamped {start} on the old timeline"
    finally:
        close_rig(rig)
