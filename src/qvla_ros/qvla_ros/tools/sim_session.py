"""The sim and policy nodes as processes, plus a :class:`SimMonitor` watching them in its own rclpy
context: what the demo, the closed-loop benchmark and the closed-loop test all start, wait for and
stop the same way."""

from __future__ import annotations

import time
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor

from qvla_core.robot_io import RobotConfig
from qvla_msgs.msg import PolicyStatus
from qvla_ros.tools.bringup import NodeSpec
from qvla_ros.tools.node_process import NodeProcess
from qvla_ros.tools.sim_monitor import SimMonitor, Spinner


class SimSession:
    def __init__(
        self,
        specs: list[NodeSpec],
        config: RobotConfig,
        log_dir: Path | None = None,
        prefix: Path | None = None,
    ) -> None:
        self.procs = [NodeProcess(spec, log_dir=log_dir, prefix=prefix) for spec in specs]
        self.context = Context()
        rclpy.init(context=self.context)
        self.monitor = SimMonitor(config, context=self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.monitor)
        self._spinner = Spinner(executor)
        self.stop_errors: list[str] = []
        self.logs: dict[str, str] = {}

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until the sim clock runs and the policy node is active (its model loaded). RuntimeError
        with the node's log if one exits; TimeoutError with every log after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            dead = next((p for p in self.procs if not p.alive()), None)
            if dead is not None:
                raise RuntimeError(f"{dead.spec.executable} exited:\n{dead.log()[-3000:]}")
            with self.monitor.lock:
                status = self.monitor.status
            active = status is not None and status.lifecycle_state == PolicyStatus.LIFECYCLE_ACTIVE
            if active and self.monitor.now() > 0.0:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.spec.executable}\n{p.log()[-2000:]}" for p in self.procs)
                raise TimeoutError(f"sim and policy not ready after {timeout:.0f} s:\n{logs}")
            time.sleep(0.1)

    def close(self) -> dict[str, int]:
        """Stop observing, then stop the nodes, the policy first (its hold still reaches the sim).
        Returns each executable's exit code; a node that ignored SIGINT was killed, and why is in
        ``stop_errors``. Each node's whole log is kept in ``logs``; the monitor's records stay
        readable."""
        self._spinner.stop()
        self.monitor.destroy_node()
        rclpy.try_shutdown(context=self.context)
        codes: dict[str, int] = {}
        for proc in reversed(self.procs):
            try:
                codes[proc.spec.executable] = proc.stop()
            except RuntimeError as exc:
                self.stop_errors.append(str(exc))
                codes[proc.spec.executable] = int(proc.proc.returncode)
            self.logs[proc.spec.executable] = proc.close()
        return codes
