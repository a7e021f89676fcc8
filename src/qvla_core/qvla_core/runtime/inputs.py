"""What has arrived from the robot's sensors, checked: the engine's input side.

``SensorInputs`` owns the approximate-time sync, the camera frame histories, the joint-state merger
and the watchdog's input ages, and counts what was received and rejected per input. It is not
thread-safe by itself: the engine calls it under its own lock, because an observation, the watchdog
and the plan must change together (see engine.py).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from qvla_core.robot_io import RobotConfig
from qvla_core.runtime.frame_history import CameraHistory
from qvla_core.runtime.images import check_size
from qvla_core.runtime.joint_state import JointStateMerger
from qvla_core.runtime.safety import Watchdog
from qvla_core.runtime.sync import ApproximateTimeSync, SyncedSet

F64 = npt.NDArray[np.float64]


class SensorInputs:
    def __init__(self, config: RobotConfig) -> None:
        emb, io = config.embodiment, config.ros
        self.cameras = {c.name: c for c in emb.cameras}
        self.history = {c.name: CameraHistory(c) for c in emb.cameras if c.history.frames > 1}
        self.merger = JointStateMerger(config)
        names = [c.camera for c in io.cameras] + [j.topic for j in io.joint_states]
        self.sync: ApproximateTimeSync[Any] = ApproximateTimeSync(
            names, io.sync.slop_s, io.sync.max_age_s, io.sync.queue_size
        )
        limits = {c.camera: io.safety.max_image_age_s for c in io.cameras}
        limits.update({j.topic: io.safety.max_state_age_s for j in io.joint_states})
        self.watchdog = Watchdog(limits)
        self.received: dict[str, int] = dict.fromkeys(names, 0)
        self.rejections: dict[str, int] = {}
        self.rejection_times: deque[float] = deque(maxlen=256)

    def add_camera(self, camera: str, stamp: float, image: npt.NDArray[np.uint8], now: float) -> None:
        """A decoded frame; raises QvlaError (nothing is kept) for a wrong size or a bad stamp. A frame
        that cannot be used does not count as fresh: a camera sending only bad frames goes stale."""
        check_size(image, self.cameras[camera])
        self.sync.add(camera, stamp, image, now)
        if camera in self.history:
            self.history[camera].push(image, stamp)
        self.watchdog.feed(camera, stamp)
        self.received[camera] += 1

    def add_joint_state(self, topic: str, names: list[str], positions: F64, stamp: float, now: float) -> None:
        """One JointState message; raises QvlaError for a bad one (a future stamp must not poison
        the merger, so the stamp is checked before anything is kept)."""
        self.sync.check(topic, stamp, now)
        self.merger.update(topic, names, positions, stamp)
        self.sync.add(topic, stamp, None, now)
        self.watchdog.feed(topic, stamp)
        self.received[topic] += 1

    def reject(self, source: str) -> None:
        self.rejections[source] = self.rejections.get(source, 0) + 1
        self.rejection_times.append(time.monotonic())

    def recent_rejections(self, within_s: float = 5.0) -> int:
        cutoff = time.monotonic() - within_s
        return sum(1 for t in self.rejection_times if t > cutoff)

    def latest(self, now: float) -> SyncedSet[Any] | None:
        """The freshest complete observation, or None."""
        return self.sync.latest(now)

    def frames(self, stamp: float) -> dict[str, Any]:
        """Each history camera's frames up to ``stamp`` (the other cameras' frame is in the sync set)."""
        return {name: h.frames(stamp) for name, h in self.history.items()}

    def forget(self) -> None:
        """Drop every frame, joint state and input age (after the clock jumped back)."""
        self.sync.clear()
        for history in self.history.values():
            history.clear()
        self.merger.reset()
        self.watchdog.reset()

    def until_stale(self, now: float) -> float:
        """Seconds until the first input goes stale (-inf while one was never fed, <= 0 when one is)."""
        return self.watchdog.next_expiry() - now
