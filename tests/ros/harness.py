"""Helpers for integration tests over real DDS on loopback.

``RosPeer`` is the test process's own rclpy node (playing the robot, the
controller or an operator) spinning in a background thread. ``InstalledNode``
runs an executable from install/ exactly as ``ros2 run``/launch would, with a
parameters file, and checks that it shuts down cleanly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from qvla_ros.tools.bringup import NodeSpec
from qvla_ros.tools.node_process import NodeProcess, executable_path
from qvla_ros.tools.sim_monitor import Spinner, call_service

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install"
T = TypeVar("T")


class RosPeer:
    def __init__(self, name: str = "qvla_test_peer") -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = Spinner(self.executor)

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        return call_service(client, request, timeout)

    def close(self) -> None:
        self._spinner.stop()  # the spin thread leaves before anything is destroyed
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.01) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def installed_executable(package: str, executable: str) -> Path:
    return executable_path(package, executable, INSTALL / package)


class InstalledNode(NodeProcess):
    """Runs ``install/<pkg>/lib/<pkg>/<exe> --ros-args --params-file F`` like launch_ros does
    (qvla_ros.tools.node_process, with the executable taken from this checkout's install/)."""

    def __init__(
        self,
        package: str,
        executable: str,
        parameters: dict[str, Any] | None = None,
        name: str | None = None,
        namespace: str | None = None,
        remappings: dict[str, str] | None = None,
        log_level: str = "info",
        env: dict[str, str] | None = None,
    ) -> None:
        spec = NodeSpec(
            package,
            executable,
            name or "",
            namespace or "",
            dict(parameters or {}),
            tuple((remappings or {}).items()),
            log_level,
        )
        super().__init__(spec, env=env, prefix=INSTALL / package)

    @classmethod
    def from_spec(cls, spec: NodeSpec) -> InstalledNode:
        """What the launch logic decided (qvla_ros.tools.bringup), run from this checkout's install/."""
        return cls(
            spec.package,
            spec.executable,
            spec.parameters,
            name=spec.name,
            namespace=spec.namespace or None,
            remappings=dict(spec.remappings),
            log_level=spec.log_level,
        )
