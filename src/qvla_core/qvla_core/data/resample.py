"""Recorded messages -> one frame per control tick, by the rules the policy node applies at inference.

At each tick ``t`` of the robot YAML's control-rate grid (``t_k = start + k / control_rate_hz``) the
frame holds what the policy node would have built at ``t``:

* the images and joint states of :class:`~qvla_core.runtime.sync.ApproximateTimeSync`'s freshest
  complete set among the messages stamped at or before ``t`` (``ros.sync``: slop, max age, queue),
  every input younger than its ``ros.safety`` limit (the :class:`~qvla_core.runtime.safety.Watchdog`
  the engine checks before inferring); the state is :class:`~qvla_core.runtime.joint_state.
  JointStateMerger`'s at ``t`` (joint names mapped, grippers normalised), as the engine takes it;
* the action due at ``t`` from ``ros.recording.actions``: the leader arms' merged JointState (the
  same merger over the leader topics, the leader's gripper range), or the controllers' command at
  ``t`` (:class:`~qvla_core.sim.trajectory_executor.TrajectoryExecutor`, fed every JointTrajectory
  when the recorder received it, holding the measured start position until the first one), or
  (``odometry``, a mobile base) the pose at the next frame's observation stamp in base_link at this
  frame's (:mod:`qvla_core.data.waypoints`; after the stop the base stays), so a frame is handed out
  once the next one is built.

A tick where the observation is incomplete or an input is too old is a gap: an error (naming the
episode, the time and the input), except before the first complete tick (the start of a bag that
was not recorded by our recorder, which keeps a pre-roll); those leading ticks are counted.

Messages arrive in log-time order; a tick is built once the log time has passed it by the largest
age limit, so a message that arrives later than that could not have been used by the policy either.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from qvla_core.data.mcap_reader import Message, RecordingError
from qvla_core.data.waypoints import OdometryTrack, WaypointLayout, relative, yaw_of_quaternion
from qvla_core.errors import ObservationError
from qvla_core.robot_io import (
    JointStateInput,
    LeaderActions,
    OdometryActions,
    RobotConfig,
    TrajectoryOutput,
)
from qvla_core.runtime.images import ImageArray, check_size, decode_compressed, decode_raw
from qvla_core.runtime.joint_state import GripperScaling, JointStateMerger
from qvla_core.runtime.safety import Watchdog
from qvla_core.runtime.sync import ApproximateTimeSync
from qvla_core.sim.trajectory_executor import TrajectoryExecutor

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Frame:
    index: int  # control ticks since the episode's first frame
    stamp_ns: int  # the tick on the recording's clock
    state: FloatArray
    action: FloatArray
    images: dict[str, ImageArray]


@dataclass
class ResampleStats:
    leading_ticks_skipped: int = 0  # before the first complete observation
    messages_out_of_order: int = 0  # rejected like the policy node rejects them
    trajectories_rejected: int = 0  # rejected like joint_trajectory_controller rejects them


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def _leader_merger(config: RobotConfig, source: LeaderActions) -> JointStateMerger:
    """A JointStateMerger over the leader topics that fills the action vector (same mapping rules)."""
    emb, io = config.embodiment, config.ros
    inputs = [
        JointStateInput(topic=j.topic, joint_names=j.joint_names, channels=j.channels)
        for j in source.joint_states
    ]
    ranges = io.gripper_raw_range if source.gripper_raw_range is None else source.gripper_raw_range
    leader = config.model_copy(
        update={
            "embodiment": emb.model_copy(update={"state": list(emb.action)}),
            "ros": io.model_copy(update={"joint_states": inputs, "gripper_raw_range": ranges}),
        }
    )
    return JointStateMerger(leader)


@dataclass
class _Controller:
    out: TrajectoryOutput
    action_index: list[int]
    executor: TrajectoryExecutor | None = None


@dataclass
class _Pending:
    """Messages of one topic not yet handed to the sync, sorted by stamp."""

    stamps: list[int] = field(default_factory=list)
    msgs: list[Any] = field(default_factory=list)

    def push(self, stamp: int, msg: Any) -> None:
        k = bisect.bisect_right(self.stamps, stamp)
        self.stamps.insert(k, stamp)
        self.msgs.insert(k, msg)

    def pop_until(self, t: int) -> list[tuple[int, Any]]:
        k = bisect.bisect_right(self.stamps, t)
        out = list(zip(self.stamps[:k], self.msgs[:k], strict=True))
        del self.stamps[:k], self.msgs[:k]
        return out


class EpisodeResampler:
    """Feed :meth:`add` the episode's messages in log-time order, collect frames from :meth:`ready`
    as you go and from :meth:`finish` at the end."""

    def __init__(self, config: RobotConfig, label: str, start_ns: int, stop_ns: int) -> None:
        emb, io = config.embodiment, config.ros
        if io.recording is None:
            raise RecordingError(f"robot {emb.name}: the YAML has no ros.recording section")
        self.label, self.start_ns, self.stop_ns = label, start_ns, stop_ns
        self.dt_ns = round(1e9 / emb.control_rate_hz)
        self.stats = ResampleStats()
        self._cameras = {c.topic: c for c in io.cameras}
        self._camera_specs = {c.name: c for c in emb.cameras}
        inputs = [c.camera for c in io.cameras] + [j.topic for j in io.joint_states]
        self._sync: ApproximateTimeSync[ImageArray | None] = ApproximateTimeSync(
            inputs, io.sync.slop_s, io.sync.max_age_s, io.sync.queue_size
        )
        limits = {c.camera: io.safety.max_image_age_s for c in io.cameras}
        limits.update({j.topic: io.safety.max_state_age_s for j in io.joint_states})
        self._limits = limits
        self._watchdog = Watchdog(limits)
        self._merger = JointStateMerger(config)
        self._state_names = emb.state_names
        self._n_action = len(emb.action)
        source = io.recording.actions
        self._leader = _leader_merger(config, source) if isinstance(source, LeaderActions) else None
        leader_topics = set(self._leader.topics) if self._leader is not None else set()
        self._observed = set(self._cameras) | {j.topic for j in io.joint_states} | leader_topics
        self._leader_topics = leader_topics
        self._grippers = GripperScaling(io.gripper_raw_range)
        action_index = {n: i for i, n in enumerate(emb.action_names)}
        self._controllers = {
            o.topic: _Controller(o, [action_index[c] for c in o.channels])
            for o in io.outputs
            if isinstance(o, TrajectoryOutput) and self._leader is None
        }
        self._pending: dict[str, _Pending] = {t: _Pending() for t in self._observed}
        self._odometry = _Odometry(config, label) if isinstance(source, OdometryActions) else None
        self._trajectories: deque[tuple[int, str, Any]] = deque()
        window_s = max(io.sync.max_age_s, io.safety.max_image_age_s, io.safety.max_state_age_s)
        self._window_ns = round(window_s * 1e9)
        self._next = start_ns
        self._frames = 0

    @property
    def topics(self) -> set[str]:
        extra = {self._odometry.topic} if self._odometry is not None else set()
        return self._observed | set(self._controllers) | extra

    @property
    def lookback_ns(self) -> int:
        """How far before the start messages matter (the recorder's pre-roll covers it)."""
        return self._window_ns + self.dt_ns

    @property
    def ticks(self) -> int:
        """Control ticks in [start, stop]."""
        return max(0, (self.stop_ns - self.start_ns) // self.dt_ns + 1)

    # ------------------------------------------------------------ input
    def add(self, message: Message) -> None:
        if message.topic in self._controllers:
            # A trajectory from before the start is not executed: the episode starts holding (the
            # sim resets its controllers; a robot's operator starts from rest).
            if message.log_ns >= self.start_ns:
                self._trajectories.append((message.log_ns, message.topic, message.msg))
        elif message.topic in self._pending:
            self._pending[message.topic].push(stamp_ns(message.msg), message.msg)
        elif self._odometry is not None and message.topic == self._odometry.topic:
            self._odometry.add(message.msg)

    def ready(self, log_ns: int) -> Iterator[Frame]:
        """Frames of the ticks that no message logged after ``log_ns`` can change any more."""
        while self._next <= self.stop_ns and self._next + self._window_ns < log_ns:
            frame = self._tick(self._next)
            self._next += self.dt_ns
            if frame is not None:
                yield from self._settle(frame)

    def finish(self) -> Iterator[Frame]:
        """The remaining ticks, up to the episode's stop."""
        while self._next <= self.stop_ns:
            frame = self._tick(self._next)
            self._next += self.dt_ns
            if frame is not None:
                yield from self._settle(frame)
        if self._odometry is not None and self._odometry.held is not None:
            yield self._odometry.release(self._odometry.track.pose_until(self.stop_ns / 1e9))
        if self._frames == 0:
            raise RecordingError(
                f"{self.label}: empty episode: no control tick between {self.start_ns / 1e9:.3f} s and "
                f"{self.stop_ns / 1e9:.3f} s has a complete observation and action"
            )

    # ------------------------------------------------------------ one tick
    def _tick(self, t: int) -> Frame | None:
        now = t / 1e9
        self._flush(t)
        try:
            state = self._observation_state(now)
            action = self._action(t, now, state)
        except ObservationError as exc:
            if self._frames == 0:
                self.stats.leading_ticks_skipped += 1
                return None
            into = (t - self.start_ns) / 1e9
            raise RecordingError(
                f"{self.label}: gap at {into:.3f} s into the episode (tick {self._frames}): {exc}"
            ) from None
        synced = self._sync.latest(now)
        assert synced is not None  # _observation_state checked it
        images = {name: synced.payloads[name] for name in self._camera_specs}
        frame = Frame(self._frames, t, state, action, images)  # type: ignore[arg-type]
        self._frames += 1
        return frame

    def _observation_state(self, now: float) -> FloatArray:
        stale = self._watchdog.stale(now)
        if stale:
            ages = ", ".join(
                f"{k} {'never' if math.isinf(v) else f'{v:.3f} s old'} (limit {self._limits[k]} s)"
                for k, v in sorted(stale.items())
            )
            raise ObservationError(f"stale input: {ages}")
        if self._sync.latest(now) is None:
            sync = self._sync
            raise ObservationError(
                f"no complete observation within slop {sync.slop_s} s and max age {sync.max_age_s} s"
            )
        state, _ = self._merger.state(now)
        return state

    def _settle(self, frame: Frame) -> Iterator[Frame]:
        """Odometry labels: hand out the previous frame, now that this one's instant is known."""
        if self._odometry is None:
            yield frame
            return
        pose = self._odometry.current
        if self._odometry.held is not None:
            yield self._odometry.release(pose)
        self._odometry.held = (frame, pose)

    def _action(self, t: int, now: float, state: FloatArray) -> FloatArray:
        if self._odometry is not None:
            synced = self._sync.latest(now)
            assert synced is not None  # _observation_state checked it
            self._odometry.current = self._odometry.track.pose_at(synced.stamp)
            return np.zeros(self._n_action, dtype=np.float32)  # set when the next frame is known
        if self._leader is not None:
            action, _ = self._leader.state(now)
            return action
        action = np.zeros(self._n_action, dtype=np.float32)
        while self._trajectories and self._trajectories[0][0] <= t:
            log_ns, topic, msg = self._trajectories.popleft()
            self._command(self._controllers[topic], log_ns / 1e9, msg, state)
        for ctrl in self._controllers.values():
            if ctrl.executor is None:
                ctrl.executor = self._holding(ctrl, state)
            raw = ctrl.executor.target(now)
            for j, (ch, i) in enumerate(zip(ctrl.out.channels, ctrl.action_index, strict=True)):
                action[i] = self._grippers.to_normalised(ch, float(raw[j]))
        return action

    def _holding(self, ctrl: _Controller, state: FloatArray) -> TrajectoryExecutor:
        """A controller before its first trajectory holds the measured position (what a JTC does)."""
        where = {n: i for i, n in enumerate(self._state_names)}
        missing = [ch for ch in ctrl.out.channels if ch not in where]
        if missing:
            raise RecordingError(
                f"{self.label}: {ctrl.out.topic}: action channels {missing} have no state channel, so "
                "nothing says what the controller held before its first trajectory"
            )
        initial = [self._grippers.to_hardware(ch, float(state[where[ch]])) for ch in ctrl.out.channels]
        return TrajectoryExecutor(ctrl.out.joint_names, initial)

    def _command(self, ctrl: _Controller, now: float, msg: Any, state: FloatArray) -> None:
        names = list(msg.joint_names)
        unknown = [n for n in names if n not in ctrl.out.joint_names]
        if unknown:
            raise RecordingError(
                f"{self.label}: {ctrl.out.topic}: trajectory names joints {unknown}; the robot YAML's "
                f"controller has {list(ctrl.out.joint_names)} (mismatched joint names)"
            )
        if ctrl.executor is None:
            ctrl.executor = self._holding(ctrl, state)
        rows = [list(p.positions) for p in msg.points]
        if not rows or any(len(r) != len(names) for r in rows):
            if not rows:  # JTC: an empty trajectory stops and holds
                ctrl.executor.hold(now)
            else:
                self.stats.trajectories_rejected += 1
            return
        tfs = [float(p.time_from_start.sec) + float(p.time_from_start.nanosec) * 1e-9 for p in msg.points]
        start = stamp_ns(msg) / 1e9
        if not ctrl.executor.accept(start, names, tfs, np.asarray(rows, dtype=np.float64), now):
            self.stats.trajectories_rejected += 1

    # ------------------------------------------------------------ messages -> sync, merger, watchdog
    def _flush(self, t: int) -> None:
        for topic, pending in self._pending.items():
            for stamp, msg in pending.pop_until(t):
                self._take(topic, stamp / 1e9, msg, t / 1e9)

    def _take(self, topic: str, stamp: float, msg: Any, now: float) -> None:
        try:
            if topic in self._leader_topics:
                assert self._leader is not None
                self._leader.update(topic, list(msg.name), list(msg.position), stamp)
                return
            cam = self._cameras.get(topic)
            if cam is None:
                self._sync.check(topic, stamp, now)
                self._merger.update(topic, list(msg.name), list(msg.position), stamp)
                self._sync.add(topic, stamp, None, now)
                self._watchdog.feed(topic, stamp)
                return
            self._sync.check(cam.camera, stamp, now)
        except ObservationError as exc:
            if "out of order" in str(exc):
                self.stats.messages_out_of_order += 1
                return
            raise RecordingError(f"{self.label}: {topic} at {stamp:.3f} s: {exc}") from None
        image = self._decode(topic, cam.compressed, msg, stamp)
        self._sync.add(cam.camera, stamp, image, now)
        self._watchdog.feed(cam.camera, stamp)

    def _decode(self, topic: str, compressed: bool, msg: Any, stamp: float) -> ImageArray:
        camera = self._camera_specs[self._cameras[topic].camera]
        try:
            if compressed:
                image = decode_compressed(msg.format, msg.data)
            else:
                image = decode_raw(
                    msg.encoding,
                    msg.height,
                    msg.width,
                    msg.step,
                    msg.data,
                    is_bigendian=bool(msg.is_bigendian),
                )
            check_size(image, camera)
        except ObservationError as exc:
            raise RecordingError(f"{self.label}: {topic} at {stamp:.3f} s: {exc}") from None
        return image


class _Odometry:
    """The odometry of one episode and the frame waiting for its label (see the module docstring)."""

    def __init__(self, config: RobotConfig, label: str) -> None:
        assert config.ros.recording is not None
        source = config.ros.recording.actions
        assert isinstance(source, OdometryActions)
        self.topic, self.label = source.topic, label
        self.track = OdometryTrack(source.topic, config.ros.safety.max_state_age_s)
        self.layout = WaypointLayout(config.embodiment)
        self.current = np.zeros(3)
        self.held: tuple[Frame, npt.NDArray[np.float64]] | None = None

    def add(self, msg: Any) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        pose = (float(p.x), float(p.y), yaw_of_quaternion(q.x, q.y, q.z, q.w))
        stamp = stamp_ns(msg) / 1e9
        if not all(math.isfinite(v) for v in (*pose, stamp)):
            raise RecordingError(f"{self.label}: {self.topic} at {stamp:.3f} s: a non-finite pose {pose}")
        self.track.add(stamp, pose)

    def release(self, next_pose: npt.NDArray[np.float64]) -> Frame:
        """The held frame with its label: ``next_pose`` in base_link at the frame's instant."""
        assert self.held is not None
        frame, pose = self.held
        self.held = None
        step = relative(pose, next_pose)[0]
        if self.layout.outside(step):
            raise RecordingError(
                f"{self.label}: {self.topic}: the base moved ({step[0]:.2f}, {step[1]:.2f}) m between frame "
                f"{frame.index} and the next, beyond the robot YAML's x/y waypoint limits "
                f"{self.layout.limits_text()}: a jump in the odometry (reset mid-episode?)"
            )
        return Frame(frame.index, frame.stamp_ns, frame.state, self.layout.to_row(step), frame.images)
