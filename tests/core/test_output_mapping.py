"""The hold the engine sends (``hold_action``) stays within the embodiment's limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qvla_core.embodiment import load_embodiment
from qvla_core.runtime.output_mapping import hold_action

ROBOTS = Path(__file__).resolve().parents[2] / "config" / "robots"


def test_hold_is_the_measured_state_clamped_into_the_limits() -> None:
    franka = load_embodiment(ROBOTS / "franka.yaml")
    state = np.array([0.1, -0.2, 0.3, -1.0, 0.0, 1.0, 0.0, 0.5], dtype=np.float32)
    np.testing.assert_allclose(hold_action(franka, state), state.astype(np.float64))
    # joint4 at its upper limit -0.0698, rounded to float32 (-0.0697999969): held at the limit, not past it
    state[3] = np.float32(-0.0698)
    state[5] = -0.05  # joint6 read past its lower limit -0.0175
    state[7] = 1.02  # gripper read slightly past open
    hold = hold_action(franka, state)
    assert hold[3] == -0.0698 and hold[5] == -0.0175 and hold[7] == 1.0
    lower = np.array([c.lower for c in franka.action])
    upper = np.array([c.upper for c in franka.action])
    assert (hold >= lower).all() and (hold <= upper).all()
