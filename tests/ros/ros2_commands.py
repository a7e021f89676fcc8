"""The ROS 2 command-line tools, run the way a user types them.

Every command runs as ``bash -c "source scripts/env.sh && <command>"``: the README's text, verbatim,
in the environment the README sets up (the test process's ROS_DOMAIN_ID is inherited, so concurrent
test runs stay apart). ``ros2 launch`` runs in its own process group, like a terminal's foreground
job, and :meth:`Launch.ctrl_c` sends SIGINT to that whole group, as Ctrl-C does.

The tools (launch, launch_ros, ros2cli) are not on PyPI: ``scripts/test.sh`` installs them from
shared/ros2-extras. Without them these tests skip, except under ``CI=true``, where a missing tool
is a failure (a broken install must not pass as a skip).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ros.harness import REPO

ENV_SH = REPO / "scripts" / "env.sh"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # launch's emulate_tty output is coloured


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_ros2_tools() -> None:
    """Skip the calling test module unless ``ros2``, launch and launch_ros work; fail under CI."""
    missing = [] if shutil.which("ros2") else ["the ros2 command"]
    try:
        import launch_ros.actions  # noqa: F401  (imports launch; needs the composition_interfaces build)
    except ImportError as exc:
        missing.append(f"launch/launch_ros ({exc})")
    if not missing:
        return
    reason = (
        f"{'; '.join(missing)} not installed: scripts/test.sh installs the ROS 2 tools from "
        "shared/ros2-extras (on a robot, the ROS 2 distribution has them)"
    )
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def user_shell(command: str) -> list[str]:
    return ["bash", "-c", f"source {shlex.quote(str(ENV_SH))} >/dev/null && {command}"]


def plain(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass
class Result:
    command: str
    returncode: int
    output: str  # stdout and stderr together, as a terminal shows them

    def __str__(self) -> str:
        return f"$ {self.command}\n[exit {self.returncode}]\n{self.output}"


def run(command: str, timeout: float = 60.0) -> Result:
    proc = subprocess.run(
        user_shell(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    return Result(command, proc.returncode, plain(proc.stdout))


def run_until(command: str, accept: Callable[[Result], bool], timeout: float = 30.0) -> Result:
    """Repeat ``command`` until ``accept`` takes its result. Right after a launch (or the ros2
    daemon's start) the graph is not discovered yet: ``ros2 lifecycle get`` says "Node not found"
    for a moment, as it does for a user who types it too early."""
    deadline = time.monotonic() + timeout
    while True:
        result = run(command, timeout=max(10.0, timeout))
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no acceptable answer within {timeout} s; the last one:\n{result}")
        time.sleep(0.5)


class Launch:
    """``ros2 launch ...`` as a terminal's foreground job; its output goes to ``log_dir``."""

    def __init__(self, command: str, log_dir: Path, name: str = "launch") -> None:
        self.command = command
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        # exec: the launch process itself leads the new process group (what the shell's job is)
        self.proc = subprocess.Popen(
            user_shell(f"exec {command}"),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return plain(self.log_path.read_text(errors="replace"))

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_output(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the output."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output())
            if found:
                return found
            if time.monotonic() > deadline or not self.running():
                raise AssertionError(
                    f"no {pattern!r} in the output of {self.command}:\n{self.output()[-4000:]}"
                )
            time.sleep(0.1)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.command} still ran after {timeout} s:\n{self.output()[-4000:]}"
            ) from None

    def ctrl_c(self, presses: int = 1, timeout: float = 20.0) -> float:
        """SIGINT to the whole process group (launch and every node), ``presses`` times 50 ms apart
        (users press twice); seconds from the first until launch exited."""
        start = time.monotonic()
        for press in range(presses):
            if press:
                time.sleep(0.05)
            if self.running():
                os.killpg(self.proc.pid, signal.SIGINT)
        self.wait_exit(timeout)
        return time.monotonic() - start

    def kill(self) -> None:
        if self.running():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        """Ctrl-C if still running (SIGKILL if that does not end it)."""
        try:
            if self.running():
                self.ctrl_c()
        finally:
            self.kill()
            self._log.close()


def node_lines(output: str, executable: str) -> list[str]:
    """What one node printed, without launch's ``[policy_node-1]`` prefix."""
    prefix = re.compile(rf"^\[{re.escape(executable)}-\d+\] ?", re.MULTILINE)
    return [prefix.sub("", line) for line in output.splitlines() if prefix.match(line)]


def assert_clean_exit(launch: Launch, executables: list[str]) -> None:
    """Every node finished on its own after SIGINT: no traceback, no escalation to SIGTERM/SIGKILL."""
    out = launch.output()
    assert launch.proc.returncode == 0, f"ros2 launch exited {launch.proc.returncode}:\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    assert "SIGTERM" not in out and "SIGKILL" not in out, out[-4000:]
    for exe in executables:
        assert re.search(rf"\[{exe}-\d+\]: process has finished cleanly", out), f"{exe}:\n{out[-4000:]}"
