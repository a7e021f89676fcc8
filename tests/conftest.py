"""Repository-wide test settings.

Each test module gets a DDS domain of its own (ROS_DOMAIN_ID, set before the module's fixtures start
any node): a node of one module that is still shutting down, or another pytest run on the machine
(CI, a developer, helpers), can never publish into the topics another module's test is checking.
Discovery stays on loopback.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# FastDDS maps domains 0..232 to ports; 0 is everyone's default, so tests use 1..230.
_DOMAINS = 230
os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % _DOMAINS)
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "egl")


def module_domain(module: str, pid: int, previous: int) -> int:
    """A domain for one test module of one pytest process: spread by (process, module) so that
    concurrent runs rarely meet, and never the domain of the module that ran just before."""
    domain = 1 + zlib.crc32(f"{pid}:{module}".encode()) % _DOMAINS
    return domain if domain != previous else 1 + domain % _DOMAINS


@pytest.fixture(scope="module", autouse=True)
def _dds_domain_per_module(request: pytest.FixtureRequest) -> Iterator[int]:
    domain = module_domain(request.module.__name__, os.getpid(), int(os.environ["ROS_DOMAIN_ID"]))
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    yield domain
