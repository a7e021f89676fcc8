"""The built workspace: interfaces generate, executables install, a service round trip runs over DDS."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.ros.harness import INSTALL, REPO, RosPeer, installed_executable

pytestmark = pytest.mark.ros


def test_qvla_msgs_fields_and_constants() -> None:
    from qvla_msgs.msg import ActionChunk, PolicyStatus
    from qvla_msgs.srv import SetInstruction

    chunk = ActionChunk()
    for field in (
        "header",
        "observation_stamp",
        "embodiment",
        "channel_names",
        "horizon",
        "dt",
        "shape",
        "actions",
        "inference_latency",
    ):
        assert hasattr(chunk, field), field
    assert PolicyStatus.RUN_STOPPED != PolicyStatus.RUN_RUNNING
    assert hasattr(SetInstruction.Request(), "reset") and hasattr(SetInstruction.Response(), "message")


@pytest.mark.parametrize("executable", ["policy_node"])
def test_executables_are_installed_where_ros2_run_looks(executable: str) -> None:
    path = installed_executable("qvla_ros", executable)
    assert path.parent == INSTALL / "qvla_ros" / "lib" / "qvla_ros"
    assert path.stat().st_mode & 0o111, f"{path} is not executable"


def test_launch_and_config_are_installed_into_share() -> None:
    share = INSTALL / "qvla_ros" / "share" / "qvla_ros"
    assert (share / "config" / "robots" / "aloha.yaml").exists()
    assert (share / "package.xml").exists()


def test_set_instruction_round_trip_between_processes() -> None:
    from qvla_msgs.srv import SetInstruction

    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "ros" / "set_instruction_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peer = RosPeer("set_instruction_client")
    try:
        client = peer.node.create_client(SetInstruction, "/qvla/set_instruction")
        reply = peer.call(
            client, SetInstruction.Request(instruction="  pick up the cube ", reset=True), timeout=20
        )
        assert reply.success and reply.message == "echo reset=True: pick up the cube"
        reply = peer.call(client, SetInstruction.Request(instruction="   "))
        assert not reply.success and reply.message == "instruction is empty"
    finally:
        peer.close()
        server.terminate()
        try:
            out, _ = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()  # leave no node behind for the next tests
            out, _ = server.communicate()
            pytest.fail(f"the server did not exit within 10 s of SIGTERM; its output:\n{out}")
    assert "ready" in out
