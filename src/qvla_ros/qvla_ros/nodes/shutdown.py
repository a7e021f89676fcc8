"""Ctrl-C for the nodes' main(): a signal only asks for a stop, main() does the stopping, and the
process then leaves quickly.

A terminal's Ctrl-C reaches every process of a launch, launch forwards its own SIGINT right after
(and SIGTERM 5 s later), and users press Ctrl-C twice. rclpy's own handler shuts the context down at
the first signal (too early to send a hold) and raises KeyboardInterrupt at the next one, wherever
main() is, e.g. in the middle of joining a thread that owns an EGL context. Call
:func:`stop_on_signals` after ``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``,
:func:`release_ros` after destroying the node, and :func:`prepare_exit` once main() has cleaned up.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Protocol

from rclpy.task import Future

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> threading.Event:
    """SIGINT and SIGTERM from now on set the returned event, however often they come."""
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    return stop


def release_ros() -> None:
    """Shut the rclpy context down and delete the DDS participant now. Call it once main() has
    destroyed its node, shut its executor down and dropped both (``del node, executor``).

    The participant goes when the context is destroyed, and the context only once no node handle
    holds it; node.destroy_node() leaves its entities in reference cycles with the node (and a shut
    down executor may still hold a pending callback's (task, entity, node)), which only a collection
    frees. Left to the interpreter's exit (and :func:`prepare_exit`'s frozen GC), the
    policy node's participant was never deleted, exit code 0 all the same, and its 32 MB Fast DDS
    shared-memory segment (config/fastdds.xml) stayed in /dev/shm: one per node start, 12 GB of RAM
    after a few test runs (tests/ros/test_shutdown_shm.py)."""
    import rclpy
    from rclpy.utilities import get_default_context

    rclpy.try_shutdown()
    gc.collect()
    get_default_context().destroy()


def prepare_exit() -> None:
    """After a clean shutdown: a late Ctrl-C is ignored (while the interpreter exits it puts back
    the default handlers, and the process would die with -2), and what is left is frozen out of the
    garbage collector: the exit's full collections over torch's and transformers' objects took 4-5 s
    on a busy 2-core machine (1 s frozen), long enough for launch to escalate to SIGTERM."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    gc.freeze()


class SimLoopNode(Protocol):
    """A node whose simulation runs on a thread of its own (sim_node, nav_sim_node)."""

    finished: Future

    def start(self) -> None: ...
    def close(self) -> bool: ...
    def destroy_node(self) -> None: ...


def run_sim_node(
    make: Callable[[threading.Event], SimLoopNode], logger_name: str, args: list[str] | None
) -> None:
    """main() of a sim node. The sim thread owns the MuJoCo model and the EGL context, and main must
    not return before that thread has closed them: a KeyboardInterrupt from launch's second SIGINT
    used to break out of the join, and exit() then tore EGL down (mujoco.egl's atexit eglTerminate)
    under the still-rendering thread: SIGSEGV. So a signal only sets the stop flag; the loop below
    notices it within 0.1 s, and the node is destroyed and rclpy shut down only after the thread ended."""
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from qvla_core.errors import QvlaError

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = stop_on_signals()
    node: SimLoopNode | None = None
    executor: SingleThreadedExecutor | None = None
    error: str | None = None
    try:
        node = make(stop)
        node.start()
        executor = SingleThreadedExecutor()
        executor.add_node(node)  # type: ignore[arg-type]
        while not stop.is_set() and not node.finished.done() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        error = node.finished.result() if node.finished.done() else None
    except ExternalShutdownException:
        pass
    except (QvlaError, OSError, ValueError) as exc:
        error = str(exc)
    finally:
        stopped = node is None or node.close()
        if node is not None and stopped:
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if stopped:
            del node, executor
            release_ros()
        else:
            rclpy.try_shutdown()
        prepare_exit()
    logger = rclpy.logging.get_logger(logger_name)
    if not stopped:
        # Leaving through the interpreter's exit would free EGL and DDS under the running thread.
        logger.error("the sim thread did not stop within 10 s; exiting without clean-up")
        os._exit(1)
    if error:
        logger.error(error)
        sys.exit(1)
