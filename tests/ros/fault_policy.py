"""A policy plugin for fault-injection tests (``policy:=tests.ros.fault_policy:make``), loaded by the
installed policy node like any user plugin. Its chunks move the waist slowly away from the measured
state; a test makes one model call hang by writing seconds into ``$QVLA_FAULT_DIR/hang``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from qvla_core.embodiment import Embodiment
from qvla_core.policy import ActionChunk, Observation
from qvla_core.robot_io import RobotConfig
from qvla_core.runtime.output_mapping import hold_action

RAMP_RAD_PER_STEP = 0.002  # well under every max_velocity * dt


class ControlledPolicy:
    def __init__(self, config: RobotConfig, fault_dir: Path) -> None:
        self._embodiment = config.embodiment
        self._fault_dir = fault_dir
        self._waist = [i for i, c in enumerate(config.embodiment.action) if c.name.endswith("waist")]

    @property
    def embodiment(self) -> Embodiment:
        return self._embodiment

    def reset(self) -> None:
        pass

    def infer(self, observation: Observation) -> ActionChunk:
        started = time.perf_counter()
        hang = self._fault_dir / "hang"
        if hang.exists():
            seconds = float(hang.read_text())
            hang.unlink()
            time.sleep(seconds)
        emb = self._embodiment
        start = hold_action(emb, np.asarray(observation.state, dtype=np.float64)).astype(np.float32)
        actions = np.repeat(start[None, :], emb.horizon, axis=0)
        steps = np.arange(1, emb.horizon + 1, dtype=np.float32) * RAMP_RAD_PER_STEP
        for j in self._waist:
            actions[:, j] = np.minimum(start[j] + steps, emb.action[j].upper)
        latency = {"total": time.perf_counter() - started}
        return ActionChunk(actions, emb.action_names, emb.dt, observation.stamp, latency)


def make(config: RobotConfig) -> ControlledPolicy:
    return ControlledPolicy(config, Path(os.environ["QVLA_FAULT_DIR"]))
