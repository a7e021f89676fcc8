"""ROS 2 message types by name and QoS as rosbag2 writes it: what the recorder needs to subscribe to
topics it only knows from the robot YAML and the graph, and to describe them in a bag."""

from __future__ import annotations

import importlib
from typing import Any

from qvla_core.errors import QvlaError


def message_class(type_name: str) -> Any:
    """The Python class of a ROS 2 type ``pkg/msg/Name`` as a publisher advertises it.

    rosidl_runtime_py.utilities.get_message does the same on a distribution, but rosidl_runtime_py is
    not on PyPI, and the recorder must run where only rclpy and the message packages are installed.
    """
    parts = type_name.split("/")
    if len(parts) != 3 or not all(parts):
        raise QvlaError(f"topic type {type_name!r} is not of the form pkg/msg/Name")
    package, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise QvlaError(
            f"message type {type_name} is not installed in this environment ({exc}); install the "
            f"package {package} (and source its setup file) to record this topic"
        ) from exc


def qos_yaml(profiles: list[Any]) -> str:
    """The publishers' QoS as rosbag2 stores ``offered_qos_profiles`` (a YAML list)."""
    import yaml

    def duration(d: Any) -> dict[str, int]:
        sec, nsec = divmod(int(d.nanoseconds), 1_000_000_000)
        return {"sec": sec, "nsec": nsec}

    rows = [
        {
            "history": int(p.history),
            "depth": int(p.depth),
            "reliability": int(p.reliability),
            "durability": int(p.durability),
            "deadline": duration(p.deadline),
            "lifespan": duration(p.lifespan),
            "liveliness": int(p.liveliness),
            "liveliness_lease_duration": duration(p.liveliness_lease_duration),
            "avoid_ros_namespace_conventions": bool(p.avoid_ros_namespace_conventions),
        }
        for p in profiles
    ]
    return str(yaml.safe_dump(rows, sort_keys=False))
