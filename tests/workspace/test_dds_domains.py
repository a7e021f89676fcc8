"""Each test module runs in a DDS domain of its own (tests/conftest.py)."""

from __future__ import annotations

import os

from tests.conftest import module_domain


def test_this_module_runs_in_the_domain_its_fixture_chose(_dds_domain_per_module: int) -> None:
    assert os.environ["ROS_DOMAIN_ID"] == str(_dds_domain_per_module)
    assert 1 <= _dds_domain_per_module <= 230


def test_consecutive_modules_never_share_a_domain() -> None:
    modules = [f"tests.ros.test_{i}" for i in range(500)]
    previous = 0
    for name in modules:
        domain = module_domain(name, 4242, previous)
        assert domain != previous and 1 <= domain <= 230
        previous = domain
    spread = {module_domain(name, 4242, 0) for name in modules[:50]}
    assert len(spread) > 35, "modules of one run are spread over many domains"
