"""Helpers for integration tests over real DDS on loopback.

``RosPeer`` is the test process's own rclpy node (playing the robot, the
controller or an operator) spinning in a background thread. ``InstalledNode``
runs an executable from install/ exactly as ``ros2 run``/launch would, with a
parameters file, and checks that it shuts down cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import rclpy
import yaml
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

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
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:
                if not self.context.ok():
                    return
                raise

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available after {timeout} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply from {client.srv_name} within {timeout} s")
            time.sleep(0.005)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2.0)


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
    path = INSTALL / package / "lib" / package / executable
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: run scripts/setup.sh (it builds the workspace)")
    return path


class InstalledNode:
    """Runs ``install/<pkg>/lib/<pkg>/<exe> --ros-args --params-file F`` like launch_ros does."""

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
        self.exe = installed_executable(package, executable)
        self._tmp = tempfile.TemporaryDirectory(prefix="qvla-node-")
        args = [str(self.exe), "--ros-args", "--log-level", log_level]
        if parameters:
            params_file = Path(self._tmp.name) / "params.yaml"
            params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
            args += ["--params-file", str(params_file)]
        if name:
            args += ["-r", f"__node:={name}"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        for src, dst in (remappings or {}).items():
            args += ["-r", f"{src}:={dst}"]
        self.log_path = Path(self._tmp.name) / "node.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGINT (what launch sends on Ctrl-C) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise AssertionError(
                    f"{self.exe.name} ignored SIGINT for {timeout} s:\n{self.log()[-3000:]}"
                ) from None
        self._log.close()
        return int(self.proc.returncode)

    def close(self) -> str:
        self.stop()
        log = self.log()
        self._tmp.cleanup()
        return log
