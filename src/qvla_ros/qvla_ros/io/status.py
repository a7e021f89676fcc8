"""The policy node's /qvla/status and /diagnostics messages, built from the engine's snapshot."""

from __future__ import annotations

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from qvla_core.runtime.engine import PolicyEngine, RunState
from qvla_msgs.msg import PolicyStatus
from qvla_ros.io import conversions as conv

LIFECYCLE = {
    "unconfigured": PolicyStatus.LIFECYCLE_UNCONFIGURED,
    "inactive": PolicyStatus.LIFECYCLE_INACTIVE,
    "active": PolicyStatus.LIFECYCLE_ACTIVE,
    "finalized": PolicyStatus.LIFECYCLE_FINALIZED,
}
_LEVEL = {
    RunState.FAULT: DiagnosticStatus.ERROR,
    RunState.STOPPED: DiagnosticStatus.WARN,
    RunState.PAUSED: DiagnosticStatus.OK,
}


def unconfigured_status(stamp: Time, lifecycle: str, fault: str) -> tuple[PolicyStatus, DiagnosticStatus]:
    """Status before configure (or after it failed): the fault that kept it from configuring."""
    msg = PolicyStatus(lifecycle_state=LIFECYCLE[lifecycle], last_fault=fault)
    msg.header.stamp = stamp
    diag = DiagnosticStatus(name="qvla: policy", hardware_id="qvla")
    diag.level = DiagnosticStatus.ERROR if fault else DiagnosticStatus.OK
    diag.message = fault or "unconfigured"
    return msg, diag


def engine_status(
    stamp: Time, lifecycle: str, engine: PolicyEngine, unheard: list[str]
) -> tuple[PolicyStatus, DiagnosticStatus]:
    """Status of a configured node; ``unheard``: command topics nothing subscribes to."""
    snap = engine.snapshot()
    msg = PolicyStatus(
        lifecycle_state=LIFECYCLE[lifecycle],
        run_state=int(snap.run_state),
        dry_run=engine.dry_run,
        instruction=snap.instruction,
        embodiment=engine.embodiment.name,
        last_inference_latency=snap.last_latency,
        chunks_produced=snap.chunks,
        commands_sent=snap.commands,
        last_fault=snap.last_fault,
        last_fault_stamp=conv.to_time(snap.last_fault_stamp),
    )
    msg.header.stamp = stamp
    diag = DiagnosticStatus(name="qvla: policy", hardware_id="qvla")
    diag.level = _LEVEL.get(snap.run_state, DiagnosticStatus.OK)
    if snap.recent_rejections:
        diag.level = max(diag.level, DiagnosticStatus.WARN)
    diag.message = snap.summary()
    diag.values = [KeyValue(key=k, value=v) for k, v in snap.key_values().items()]
    if unheard:
        # Commands to a topic nobody reads move nothing: say so (a controller not loaded, a wrong
        # namespace) instead of counting them as sent.
        diag.level = max(diag.level, DiagnosticStatus.WARN)
        diag.message += f"; nothing subscribes to {', '.join(unheard)}: is the controller running?"
        diag.values.append(KeyValue(key="outputs_without_subscriber", value=",".join(unheard)))
    return msg, diag
