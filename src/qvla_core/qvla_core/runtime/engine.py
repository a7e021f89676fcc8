"""PolicyEngine: the policy node's behaviour, free of ROS.

Inputs arrive through ``on_camera`` / ``on_joint_state`` (cheap: they only queue),
an inference worker thread pulls the freshest complete observation, runs the
policy (never more than one inference in flight), makes the chunk safe and
splices it into the committed plan, then hands the result to an ``EngineSink``
(the ROS side publishes it). ``tick`` is the watchdog that holds the robot when an
input goes stale or an inference hangs; with ``watch_period_s`` it runs on a thread of
its own, so that neither a long (or stuck) inference nor a busy transport executor can
delay a hold.

Why this file is longer than 400 lines: the run state, the inference worker, the watchdog and what
is sent to the robot share one lock and one set of rules (a chunk that lost a race with a hold never
follows it; every fault discards the inference in flight; a plan is dropped together with its
inputs). They stay in one class so that those rules can be read in one place. What could leave has
left: sensor inputs (inputs.py), status (engine_status.py), splicing and the delay budget
(scheduler.py), the safety filter, input ages and the hold (safety.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from qvla_core.errors import DeviceError, ObservationError, QvlaError, SafetyError
from qvla_core.policy import ActionChunk, Observation, Policy
from qvla_core.robot_io import RobotConfig
from qvla_core.runtime.engine_status import RunState, Snapshot, clamp_keys
from qvla_core.runtime.inputs import SensorInputs
from qvla_core.runtime.instruction import validate_instruction
from qvla_core.runtime.output_mapping import hold_action, waypoint_columns, waypoints
from qvla_core.runtime.safety import SafetyFilter
from qvla_core.runtime.scheduler import ChunkScheduler, InferenceDelay

F64 = npt.NDArray[np.float64]
# A clock that goes back by more than this (sim reset, looped bag) invalidates every held stamp.
_CLOCK_JUMP_S = 0.005


class EngineSink(Protocol):
    """What the engine needs from the transport (implemented by the ROS node)."""

    def send_trajectory(self, start: float, positions: F64, dt: float) -> None: ...
    def send_hold(self, positions: F64) -> None: ...
    def send_waypoints(self, waypoints: F64, stamp: float) -> None: ...
    def cancel_navigation(self) -> None: ...
    def publish_chunk(self, chunk: ActionChunk, first_due: float, instruction: str) -> None: ...
    def log(self, level: str, text: str) -> None: ...


def _can_hold(emb: Any) -> bool:
    try:
        hold_action(emb, np.zeros(len(emb.state)))
    except QvlaError:
        return False
    return True


class PolicyEngine:
    def __init__(
        self,
        config: RobotConfig,
        policy: Policy,
        clock: Callable[[], float],
        sink: EngineSink,
        decode: Callable[[Any], npt.NDArray[np.uint8]],
        *,
        dry_run: bool = False,
        max_instruction_length: int = 1000,
        command_lead_s: float = 0.0,
        idle_poll_s: float = 0.05,
        watch_period_s: float | None = None,
    ) -> None:
        self.config, self.policy, self.dry_run = config, policy, dry_run
        self.embodiment = emb = config.embodiment
        io = config.ros
        self._clock, self._sink, self._decode = clock, sink, decode
        self._max_instruction_length = max_instruction_length
        self._idle_poll_s = idle_poll_s
        self._inputs = SensorInputs(config)
        # A plan older than this is not trusted to run on: 3/4 of a chunk unless the YAML says otherwise
        # (half a chunk held the robot on slow but healthy calls in the soak on a loaded CPU).
        self._max_inference_s = io.safety.max_inference_s or 0.75 * emb.horizon * emb.dt
        self._infer_started: float | None = None  # engine-clock time the running inference began
        self._last_check = -math.inf  # engine-clock time of the last watchdog check (jump detection)
        self._safety = SafetyFilter(emb, io.safety)
        self._scheduler = ChunkScheduler(
            emb.dt,
            emb.horizon,
            len(emb.action),
            io.chunking.mode,
            io.chunking.ensemble_decay,
            lead_s=command_lead_s,
        )
        self._waypoint_cols = waypoint_columns(emb)
        self._hold_prefix = io.chunking.mode == "rtc" and self._waypoint_cols is None and _can_hold(emb)
        self._inference_period = io.chunking.inference_period_s

        self._lock = threading.Condition()
        self._active = False
        self._run = RunState.IDLE
        self._instruction = ""
        self._instruction_version = 0
        self._last_used_stamp = -math.inf
        self._holding = False
        self._chunks = self._commands = 0
        self._safety_velocity = self._safety_limit = self._safety_rejected = 0
        self._clamped_channels: dict[str, int] = {}
        self._last_latency = 0.0
        self._stage_latency: dict[str, float] = {}
        self._delay = InferenceDelay()
        self._fault, self._fault_stamp = "", 0.0
        self._conditioned_on = ""
        self._last_log: dict[str, float] = {}
        self._shutdown = False
        self._data_version = 0
        # Serialises what goes to the robot: a chunk that lost a race with a hold must not follow it.
        self._send_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="qvla-inference", daemon=True)
        self._worker.start()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch_period_s is not None:
            if not watch_period_s > 0:
                raise ValueError(f"watch_period_s must be > 0, got {watch_period_s}")
            self._watcher = threading.Thread(
                target=self._watch, args=(watch_period_s,), name="qvla-watchdog", daemon=True
            )
            self._watcher.start()

    # ------------------------------------------------------------------ inputs (cheap)
    def on_camera(self, camera: str, stamp: float, msg: Any) -> None:
        # Decoded on arrival (zero-copy for rgb8), so that a frame that cannot be used is never fresh.
        now = self._clock()
        try:
            image = self._decode(msg)
            with self._lock:
                self._inputs.add_camera(camera, stamp, image, now)
                self._new_data()
        except QvlaError as exc:
            self._reject(camera, str(exc))
        except Exception as exc:
            self._reject(camera, f"unusable message ({type(exc).__name__}: {exc})")

    def on_joint_state(self, topic: str, names: list[str], positions: F64, stamp: float) -> None:
        now = self._clock()
        try:
            with self._lock:
                self._inputs.add_joint_state(topic, names, positions, stamp, now)
                self._new_data()
        except QvlaError as exc:
            self._reject(topic, str(exc))
        except Exception as exc:
            self._reject(topic, f"unusable message ({type(exc).__name__}: {exc})")

    def _new_data(self) -> None:
        """Wake the inference worker (caller holds the lock): no polling delay on a new observation."""
        self._data_version += 1
        self._lock.notify_all()

    def reject_input(self, source: str, text: str) -> None:
        """An input the transport could not even read: counted and logged like any bad input."""
        self._reject(source, text)

    def _reject(self, source: str, text: str) -> None:
        with self._lock:
            self._inputs.reject(source)
        self._log_throttled("warn", f"rejected input from {source}", f"{source}: {text}")

    # ------------------------------------------------------------------ commands from the operator
    def set_instruction(self, text: str, reset: bool) -> str:
        clean = validate_instruction(text, self._max_instruction_length)
        with self._lock:
            self._instruction = clean
            self._instruction_version += 1
            if reset:
                self._scheduler.reset()
                self.policy.reset()
            if self._run == RunState.IDLE:
                self._run = RunState.RUNNING
            self._lock.notify_all()
        return clean

    def activate(self) -> None:
        with self._lock:
            self._active = True
            self._scheduler.reset()
            self._run = RunState.RUNNING if self._instruction else RunState.IDLE
            self._lock.notify_all()

    def deactivate(self) -> None:
        with self._lock:
            was_active, self._active = self._active, False
        if was_active:
            self._hold("deactivated")

    def pause(self) -> None:
        self._halt(RunState.PAUSED, "paused")

    def stop(self) -> None:
        self._halt(RunState.STOPPED, "stopped")

    def resume(self) -> None:
        with self._lock:
            if self._run in (RunState.PAUSED, RunState.STOPPED, RunState.FAULT):
                self._run = RunState.RUNNING if self._instruction else RunState.IDLE
                self._scheduler.reset()
                self._holding = False
            self._lock.notify_all()

    def _halt(self, state: RunState, why: str) -> None:
        with self._lock:
            self._run = state
            self._instruction_version += 1  # an inference in flight is discarded
        self._hold(why)

    # ------------------------------------------------------------------ watchdog at the control rate
    def tick(self) -> None:
        """One watchdog check: hold when an input is older than its limit, when the running inference
        has taken longer than ``max_inference_s`` (the robot would run on an ever older plan), or
        when the clock jumped back."""
        now = self._clock()
        with self._lock:
            back, self._last_check = self._last_check - now, now
            live = self._active and self._run in (RunState.RUNNING, RunState.FAULT)
            running = self._active and self._run == RunState.RUNNING
            stale = self._inputs.watchdog.stale(now) if running else {}
            started = self._infer_started
        if back > _CLOCK_JUMP_S:
            # A sim reset or a bag replayed in a loop: every stamp held is from another timeline, and
            # so is the committed plan. Hold on the last measured state, then forget them all; fresh
            # inputs on the new clock recover as after any fault.
            if live:
                self._fault_now(f"clock jumped back by {back:.3f} s; inputs and plan dropped", now)
            with self._lock:
                self._forget_inputs()
        elif not running:
            return
        elif stale:
            ages = ", ".join(
                f"{k} {'never' if math.isinf(v) else f'{v:.3f} s'}" for k, v in sorted(stale.items())
            )
            self._fault_now(f"stale input ({ages})", now)
        elif started is not None and now - started > self._max_inference_s:
            self._fault_now(f"inference hung ({now - started:.2f} s, limit {self._max_inference_s:g} s)", now)

    def _forget_inputs(self) -> None:
        """Under the lock: drop every held input, stamp and the plan (they are on an old timeline)."""
        self._inputs.forget()
        self._scheduler.reset()
        self._last_used_stamp = -math.inf
        self._instruction_version += 1  # an inference in flight is discarded

    def _watch(self, period_s: float) -> None:
        """The watchdog thread: wakes when the oldest input is due to go stale (at most every
        ``period_s``), so a hold never waits behind an inference, an image callback or a timer queue."""
        while not self._stop_watch.wait(self._until_next_check(period_s)):
            try:
                self.tick()
            except Exception as exc:  # the watchdog must outlive any failure of a sink
                text = f"watchdog check failed: {type(exc).__name__}: {exc}"
                self._log_throttled("error", "watchdog", text)

    def _until_next_check(self, period_s: float) -> float:
        with self._lock:
            due = self._inputs.until_stale(self._clock())
        # A finite, future expiry: wake just after it; otherwise (never fed, or already stale) poll.
        return min(period_s, max(0.001, due + 1e-4)) if math.isfinite(due) and due > 0 else period_s

    def _fault_now(self, text: str, now: float) -> None:
        with self._lock:
            self._run = RunState.FAULT
            self._fault, self._fault_stamp = text, now
            self._instruction_version += 1
        self._log_throttled("error", f"fault:{text.split(' (', maxsplit=1)[0]}", f"holding position: {text}")
        self._hold(text)

    def _hold(self, why: str) -> None:
        """Stop commanding: hold the measured position (manipulators) or cancel navigation."""
        with self._lock:
            self._scheduler.reset()
            if self._holding:
                return
            self._holding = True
            try:
                state, _ = self._inputs.merger.state(self._clock(), max_age_s=math.inf)
            except ObservationError:
                state = None
        if self.dry_run:
            return
        with self._send_lock:
            try:
                if self._waypoint_cols is not None:
                    self._sink.cancel_navigation()
                elif state is not None:
                    self._sink.send_hold(hold_action(self.embodiment, state))
                else:
                    self._log_throttled(
                        "warn", "hold-without-state", f"{why}: no joint state yet, nothing to hold"
                    )
            except Exception as exc:  # say so loudly; the caller (watchdog, service) must go on
                self._log_throttled(
                    "error", "hold-failed", f"{why}: the hold could not be sent ({type(exc).__name__}: {exc})"
                )

    # ------------------------------------------------------------------ inference worker
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._shutdown and not (
                    self._active and self._run in (RunState.RUNNING, RunState.FAULT)
                ):
                    self._lock.wait(0.1)
                if self._shutdown:
                    return
            try:
                with self._lock:
                    seen = self._data_version
                if not self._step():
                    with self._lock:
                        if self._data_version == seen and not self._shutdown:
                            self._lock.wait(self._idle_poll_s)
            except Exception as exc:  # a bug of ours, not the model's or the robot's: still hold
                self._fault_now(f"policy worker failed: {type(exc).__name__}: {exc}", self._clock())
                time.sleep(0.05)

    def _step(self) -> bool:
        """One inference if a fresh complete observation exists; False when there was none."""
        now = self._clock()
        with self._lock:
            synced = self._inputs.latest(now)
            if synced is None or synced.stamp <= self._last_used_stamp:
                return False
            if self._inputs.watchdog.stale(now):
                return False
            version = self._instruction_version
            instruction = self._instruction
            self._last_used_stamp = synced.stamp
            history = self._inputs.frames(synced.stamp)
            try:
                state, state_stamp = self._inputs.merger.state(now)
            except ObservationError as exc:
                self._log_throttled("warn", "state", str(exc))
                return False
            off = self._off_plan(state, state_stamp)
        if off:
            self._fault_now(off, now)
            return True
        with self._lock:
            prefix, weight = self._scheduler.prefix(now, self._delay.budget(), synced.stamp)
            if prefix.shape[0] == 0 and self._hold_prefix:
                prefix, weight = self._start_prefix(state, synced.stamp, now)
            self._infer_started = now
        images = {name: history.get(name, synced.payloads[name][None]) for name in self._inputs.cameras}
        observation = Observation(
            images=images,
            state=state,
            instruction=instruction,
            stamp=synced.stamp,
            action_prefix=prefix if prefix.shape[0] else None,
            prefix_weight=weight if prefix.shape[0] else None,
        )
        started = time.perf_counter()
        try:
            chunk = self.policy.infer(observation)
        except Exception as exc:
            self._fault_now(f"inference failed: {type(exc).__name__}: {exc}", self._clock())
            time.sleep(0.05)
            return True
        finally:
            with self._lock:
                self._infer_started = None
        wall = time.perf_counter() - started
        self._deliver(chunk, version, state, state_stamp, instruction, wall)
        if self._inference_period > 0:
            time.sleep(max(0.0, self._inference_period - wall))
        return True

    def _off_plan(self, state: Any, state_stamp: float) -> str:
        """Under the lock: the fault text when the measured state is off the committed plan (the
        robot was moved or reset from outside), else "". In a dry run nothing executes the plan, and
        waypoints are not tracked here (Nav2 does)."""
        if self._waypoint_cols is not None or self.dry_run:
            return ""
        planned = self._scheduler.current_target(state_stamp)
        off = None if planned is None else self._safety.off_plan(planned, state)
        if off is None:
            return ""
        channel, error = off
        return f"robot is {error:.3f} from the plan on {channel} (moved or reset from outside): plan dropped"

    def _start_prefix(self, state: npt.NDArray[np.float32], stamp: float, now: float) -> tuple[Any, Any]:
        """RTC with nothing committed yet: the robot stays where it is until the chunk arrives,
        so the first chunk is inpainted to start from the measured position (no jump)."""
        rows = min(
            self._scheduler.first_future_row(stamp, now + self._delay.budget()) + 1, self.embodiment.horizon
        )
        hold = hold_action(self.embodiment, state).astype(np.float32)
        return np.repeat(hold[None, :], rows, axis=0), np.ones(rows, dtype=np.float32)

    def _deliver(
        self, chunk: ActionChunk, version: int, state: Any, state_stamp: float, instruction: str, wall: float
    ) -> None:
        now = self._clock()
        with self._lock:
            self._delay.update(wall)
            if version != self._instruction_version or not self._active:
                return  # paused, stopped, faulted or re-instructed while inferring: discard
            if self._inputs.watchdog.stale(now):
                return  # an input went stale while inferring: the watchdog holds (or has held)
            try:  # the robot may have been moved while the model ran: check with the newest state
                off = self._off_plan(*self._inputs.merger.state(now))
            except ObservationError:
                off = ""
        if off:
            self._fault_now(off, now)
            return
        with self._lock:
            if version != self._instruction_version or not self._active:
                return
            self._chunks += 1
            self._last_latency = chunk.total_latency
            self._stage_latency = dict(chunk.latency)
            self._conditioned_on = instruction
            clamped: set[str] = set()  # "velocity:<channel>" / "limit:<channel>"
            try:
                if self._waypoint_cols is not None:
                    checked = self._safety.check(chunk.actions, None, chunk.dt)
                    clamped.update(clamp_keys(checked))
                    safe = checked.positions
                    traj = None
                else:
                    # The first sent point is due later than the state was measured: allow for that.
                    first_step = self._scheduler.planned_start(chunk.observation_stamp, now) - state_stamp

                    def guard(rows: Any) -> Any:
                        checked = self._safety.check(rows, state, chunk.dt, first_step_s=first_step)
                        clamped.update(clamp_keys(checked))
                        return checked.positions

                    traj = self._scheduler.splice(chunk, now, safety=guard)
            except (SafetyError, ValueError) as exc:
                fault = f"chunk rejected by safety: {exc}"
                self._safety_rejected += 1
            else:
                self._count_clamps(clamped)
                fault = ""
                if self._run == RunState.FAULT:
                    self._run = RunState.RUNNING
                self._holding = False
        if fault:
            self._sink.publish_chunk(chunk, chunk.observation_stamp, instruction)
            self._fault_now(fault, now)
            return
        # The robot's command goes out first; the chunk message and markers are for observers.
        if self._waypoint_cols is None and traj is None:
            self._log_throttled("warn", "late-chunk", "chunk arrived after its horizon; nothing sent")
            return
        output_fault = ""
        with self._send_lock:
            with self._lock:  # a pause, stop, fault or deactivate since the check above wins
                if version != self._instruction_version or not self._active:
                    return
            if not self.dry_run:
                try:
                    if self._waypoint_cols is not None:
                        rows = waypoints(safe, self._waypoint_cols)
                        self._sink.send_waypoints(rows, chunk.observation_stamp)
                    else:
                        assert traj is not None
                        self._sink.send_trajectory(traj.start_stamp, traj.positions, traj.dt)
                except Exception as exc:  # the robot's side refused or is missing: not an inference fault
                    output_fault = f"output failed: {type(exc).__name__}: {exc}"
                else:
                    self._count_command()
        if output_fault:
            self._fault_now(output_fault, now)
            return
        first_due = chunk.observation_stamp if traj is None else traj.start_stamp
        self._sink.publish_chunk(chunk, first_due, instruction)

    def warm_up(self) -> float | None:
        """Two inferences on a blank observation before anything is commanded: the model's first-call
        costs (allocation, kernel selection, lazy initialisation) are paid outside the control loop,
        and the delay budget starts from a measurement, so the very first chunk is inpainted from the
        measured position over the span it will really take. Returns the second inference's seconds,
        or None if the policy refused the blank observation (the budget then starts at the first
        real chunk). The policy is reset afterwards. A DeviceError (out of GPU memory) is raised: the
        node must not go on configured."""
        emb = self.embodiment
        images = {
            c.name: np.zeros((c.history.frames, c.height, c.width, 3), dtype=np.uint8) for c in emb.cameras
        }
        state = np.array([(c.lower + c.upper) / 2.0 for c in emb.state], dtype=np.float32)
        blank = Observation(images=images, state=state, instruction="warm up", stamp=0.0)
        try:
            self.policy.infer(blank)
            started = time.perf_counter()
            self.policy.infer(blank)
            wall = time.perf_counter() - started
        except DeviceError:
            raise  # out of GPU memory at the first inference: configure must fail and say so
        except Exception as exc:
            self._sink.log("warn", f"warm-up inference failed ({type(exc).__name__}: {exc}); continuing")
            return None
        finally:
            self.policy.reset()
        with self._lock:
            self._delay.update(wall)
        return wall

    def _count_clamps(self, keys: set[str]) -> None:
        """Under the lock: what the safety filter had to clamp in one chunk, by kind and channel."""
        self._safety_velocity += any(k.startswith("velocity:") for k in keys)
        self._safety_limit += any(k.startswith("limit:") for k in keys)
        for key in keys:
            self._clamped_channels[key] = self._clamped_channels.get(key, 0) + 1

    def _count_command(self) -> None:
        with self._lock:
            self._commands += 1

    # ------------------------------------------------------------------ status and lifetime
    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                run_state=self._run,
                instruction=self._instruction,
                last_latency=self._last_latency,
                chunks=self._chunks,
                commands=self._commands,
                last_fault=self._fault,
                last_fault_stamp=self._fault_stamp,
                recent_rejections=self._inputs.recent_rejections(),
                rejections=dict(self._inputs.rejections),
                received=dict(self._inputs.received),
                stage_latency=dict(self._stage_latency),
                conditioned_on=self._conditioned_on,
                safety_velocity_clamped=self._safety_velocity,
                safety_limit_clamped=self._safety_limit,
                safety_rejected=self._safety_rejected,
                clamped_channels=dict(self._clamped_channels),
            )

    def shutdown(self) -> None:
        with self._lock:
            self._shutdown = True
            self._active = False
            self._lock.notify_all()
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)
        self._worker.join(timeout=30.0)

    def _log_throttled(self, level: str, key: str, text: str, period_s: float = 1.0) -> None:
        now = time.monotonic()
        if now - self._last_log.get(key, -math.inf) >= period_s:
            self._last_log[key] = now
            self._sink.log(level, text)


__all__ = ["EngineSink", "PolicyEngine", "RunState", "Snapshot"]
