"""What the policy engine reports: its run state and a snapshot of its counters (for /qvla/status
and /diagnostics). Apart from engine.py so that the engine file holds behaviour only."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class RunState(IntEnum):
    """Same values as qvla_msgs/PolicyStatus RUN_*."""

    IDLE = 0
    RUNNING = 1
    PAUSED = 2
    STOPPED = 3
    FAULT = 4


@dataclass
class Snapshot:
    run_state: RunState
    instruction: str
    last_latency: float
    chunks: int
    commands: int
    last_fault: str
    last_fault_stamp: float
    recent_rejections: int
    rejections: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(
        default_factory=dict
    )  # usable messages per input (frames lost = sent - this)
    stage_latency: dict[str, float] = field(default_factory=dict)
    conditioned_on: str = ""
    safety_velocity_clamped: int = 0  # chunks with a point slowed to a channel's max_velocity
    safety_limit_clamped: int = 0  # chunks with a point clamped into position limits / gripper range
    safety_rejected: int = 0  # chunks the safety filter rejected (nothing of them was sent)
    # chunks that clamped each channel, keyed "velocity:<channel>" and "limit:<channel>"
    clamped_channels: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"{self.run_state.name.lower()}, {self.chunks} chunks, {self.commands} commands"
        if self.last_fault:
            text += f"; last fault: {self.last_fault}"
        return text

    def key_values(self) -> dict[str, str]:
        kv = {
            "run_state": self.run_state.name,
            "instruction": self.instruction,
            "chunks_produced": str(self.chunks),
            "commands_sent": str(self.commands),
            "last_inference_latency_s": f"{self.last_latency:.4f}",
            "last_fault": self.last_fault,
        }
        kv.update({f"latency_{k}_s": f"{v:.4f}" for k, v in self.stage_latency.items()})
        kv.update({f"rejected_{k}": str(v) for k, v in self.rejections.items()})
        kv.update({f"received_{k}": str(v) for k, v in self.received.items()})
        kv["safety_velocity_clamped_chunks"] = str(self.safety_velocity_clamped)
        kv["safety_limit_clamped_chunks"] = str(self.safety_limit_clamped)
        kv["safety_rejected_chunks"] = str(self.safety_rejected)
        kv.update({f"clamped_{k.replace(':', '_')}": str(v) for k, v in self.clamped_channels.items()})
        return kv


def clamp_keys(checked: Any) -> set[str]:
    """A SafeCommand's clamps as "velocity:<channel>" / "limit:<channel>"."""
    return {f"velocity:{n}" for n in checked.velocity_clamped} | {f"limit:{n}" for n in checked.limit_clamped}
