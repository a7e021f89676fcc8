"""qvla's loggers propagate even after ROS 2's launch installed a logger class whose loggers do not."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qvla_core.logs import get_logger


class NonPropagating(logging.Logger):
    """What `import launch` installs: new loggers keep their records to themselves."""

    def __init__(self, name: str, level: int = logging.NOTSET) -> None:
        super().__init__(name, level)
        self.propagate = False


@pytest.fixture
def launch_logger_class() -> Iterator[None]:
    before = logging.getLoggerClass()
    logging.setLoggerClass(NonPropagating)
    try:
        yield
    finally:
        logging.setLoggerClass(before)


def test_a_logger_made_after_launch_still_reaches_the_root(
    launch_logger_class: None, caplog: pytest.LogCaptureFixture
) -> None:
    name = "qvla.test_logs.after_launch"
    assert name not in logging.root.manager.loggerDict
    assert not logging.getLogger(name + ".plain").propagate  # the trap this module avoids
    log = get_logger(name)
    with caplog.at_level(logging.WARNING, logger="qvla"):
        log.warning("a warning that must not vanish")
    assert "a warning that must not vanish" in caplog.text
