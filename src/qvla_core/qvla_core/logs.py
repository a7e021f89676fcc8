"""qvla's loggers: ``qvla.*`` children that always reach the handlers of ``qvla`` and the root.

ROS 2's ``launch`` (imported by ros2 launch, the tests and tools) installs a logger class whose new
loggers do not propagate; a qvla module imported after it would log into nothing (qvla-train's
progress lines, the dataset reader's warnings). Every module takes its logger from here.
"""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, made to propagate whatever logger class is installed; so are its
    ancestors (``qvla`` for ``qvla.data``), which are created now if they do not exist yet."""
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        logging.getLogger(".".join(parts[:depth])).propagate = True
    return logging.getLogger(name)
