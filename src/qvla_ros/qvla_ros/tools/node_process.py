"""Start a :class:`~qvla_ros.tools.bringup.NodeSpec` as its own process, the way ``ros2 launch`` does.

Used where ``launch`` is not installed (the demo, the benchmarks and the integration tests on a
machine with ROS 2 from PyPI): ``<prefix>/lib/<package>/<executable> --ros-args -r __node:=...
--params-file ...``, one process group per node so a stop reaches everything it started, SIGINT
first (what launch sends on Ctrl-C), SIGKILL only when a node ignores it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import yaml

from qvla_ros.tools.bringup import NodeSpec


def executable_path(package: str, executable: str, prefix: Path | None = None) -> Path:
    """``<prefix>/lib/<package>/<executable>``; the prefix comes from the ament index by default."""
    if prefix is None:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        try:
            prefix = Path(get_package_prefix(package))
        except PackageNotFoundError as exc:
            raise FileNotFoundError(
                f"package {package} is not installed: build and source the workspace"
            ) from exc
    path = prefix / "lib" / package / executable
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: build the workspace (scripts/setup.sh)")
    return path


def command_line(spec: NodeSpec, params_file: Path | None, exe: Path) -> list[str]:
    args = [str(exe), "--ros-args", *spec.ros_arguments()]
    if spec.name:  # empty: the node's own name
        args += ["-r", f"__node:={spec.name}"]
    if spec.namespace:
        args += ["-r", f"__ns:={spec.namespace}"]
    for src, dst in spec.remappings:
        args += ["-r", f"{src}:={dst}"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    return args


class NodeProcess:
    """One running node; its stdout and stderr go to ``log_path``."""

    def __init__(
        self,
        spec: NodeSpec,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        prefix: Path | None = None,
    ) -> None:
        self.spec = spec
        self.exe = executable_path(spec.package, spec.executable, prefix)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"qvla-{spec.name}-")
        params_file = None
        if spec.parameters:
            params_file = Path(self._tmp.name) / "params.yaml"
            params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(spec.parameters)}}))
        self.log_path = Path(log_dir or self._tmp.name) / f"{spec.name or spec.executable}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            command_line(spec, params_file, self.exe),
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
        """SIGINT and wait; SIGKILL the group after ``timeout`` (then raises). Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                raise RuntimeError(
                    f"{self.exe.name} ignored SIGINT for {timeout} s:\n{self.log()[-3000:]}"
                ) from None
        if not self._log.closed:
            self._log.close()
        return int(self.proc.returncode)

    def close(self) -> str:
        """Stop, and return the whole log."""
        try:
            self.stop()
        finally:
            log = self.log()
            self._tmp.cleanup()
        return log
