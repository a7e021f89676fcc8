"""What every ``qvla-collect`` does through the running nodes, whatever the sim: the recorder node's
spec, setting the sim's seed and resetting it, starting and stopping the recorder's episodes, and an
episode's record (:mod:`qvla_ros.tools.collect` for the ALOHA, :mod:`qvla_ros.tools.collect_nav` for
the navigation sim)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvla_ros.tools.bringup import NodeSpec


def config_dir() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("qvla_ros")) / "config" / "robots"


@dataclass
class EpisodeRecord:
    seed: int
    success: bool
    time_to_success: float | None
    written: int
    dropped: int
    path: str
    task: str = ""


class RecorderDriver:
    """What every collection does through the running nodes: set the sim's seed, start and stop the
    recorder's episodes. ``sim`` is the sim node's name."""

    def __init__(self, monitor: Any, sim: str) -> None:
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        from qvla_msgs.srv import StartEpisode, StopEpisode

        self.monitor = monitor
        self.start_client = monitor.create_client(StartEpisode, "/qvla_recorder/start_episode")
        self.stop_client = monitor.create_client(StopEpisode, "/qvla_recorder/stop_episode")
        self.param_client = monitor.create_client(SetParameters, f"/{sim}/set_parameters")
        self.reset_client = monitor.create_client(Trigger, f"/{sim}/reset")
        self._lock = threading.Lock()
        self.recording = False

    def _set_seed(self, seed: int) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        value = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=seed)
        request = SetParameters.Request(parameters=[Parameter(name="seed", value=value)])
        result = self.monitor.call(self.param_client, request).results[0]
        if not result.successful:
            raise RuntimeError(f"the sim refused seed {seed}: {result.reason}")

    def reset_to(self, seed: int) -> str:
        """Hold the policy, then the sim's scene of ``seed``; returns the sim's reply."""
        m = self.monitor
        m.trigger(m.pause_client)  # the policy holds
        m.wait_sim(m.now() + 0.2, 60.0)  # the hold lands before the scene changes
        self._set_seed(seed)
        message = m.trigger(self.reset_client)
        if f"seed {seed})" not in message:
            raise RuntimeError(f"asked the sim for seed {seed}, it answered: {message}")
        m.wait_sim(m.now() + 0.1, 60.0)  # fresh sensors of the new scene
        return message

    def _start(self, task: str) -> None:
        from qvla_msgs.srv import StartEpisode

        deadline = time.monotonic() + 30.0
        while True:
            response = self.monitor.call(self.start_client, StartEpisode.Request(task=task))
            if response.accepted:
                self.recording = True
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the recorder did not start an episode: {response.message}")
            time.sleep(0.2)  # topics still being discovered

    def stop(self, success: bool, discard: bool = False) -> Any:
        from qvla_msgs.srv import StopEpisode

        self.recording = False
        response = self.monitor.call(self.stop_client, StopEpisode.Request(success=success, discard=discard))
        if not response.accepted:
            raise RuntimeError(f"the recorder did not stop the episode: {response.message}")
        return response

    def begin(self, task: str) -> float:
        """Start recording, give the policy the task (a fresh episode) and let it go; the sim time."""
        self._start(task)
        self.monitor.instruct(task)
        self.monitor.trigger(self.monitor.resume_client)
        return float(self.monitor.now())

    def finish(self, seed: int, task: str, start: float, end: float, success: bool) -> EpisodeRecord:
        response = self.stop(success=success)
        return EpisodeRecord(
            seed,
            success,
            end - start if success else None,
            int(response.messages_written),
            int(response.messages_dropped),
            str(response.path),
            task,
        )


def recorder_spec(robot_yaml: Path, bags: Path) -> NodeSpec:
    return NodeSpec(
        "qvla_ros",
        "recorder_node",
        "qvla_recorder",
        parameters={"robot_config": str(robot_yaml), "output_dir": str(bags), "use_sim_time": True},
        log_level="info",
    )
