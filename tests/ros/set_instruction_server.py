"""A stand-alone SetInstruction server for the interface round-trip test (a separate process)."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

from qvla_msgs.srv import SetInstruction


def main() -> None:
    rclpy.init()
    node = Node("set_instruction_echo")

    def handle(request: SetInstruction.Request, response: SetInstruction.Response) -> SetInstruction.Response:
        text = request.instruction.strip()
        response.success = bool(text)
        response.message = f"echo reset={request.reset}: {text}" if text else "instruction is empty"
        return response

    node.create_service(SetInstruction, "/qvla/set_instruction", handle)
    print("ready", flush=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):  # SIGINT / SIGTERM
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
