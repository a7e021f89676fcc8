"""Repository-wide test settings.

Each pytest run gets its own DDS domain so that concurrent runs on one machine
(CI, a developer, helpers) never see each other's nodes, and discovery stays on
loopback.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("ROS_DOMAIN_ID", str(5 + os.getpid() % 90))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "egl")
