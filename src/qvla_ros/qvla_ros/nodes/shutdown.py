"""Ctrl-C for the nodes' main(): a signal only asks for a stop, main() does the stopping, and the
process then leaves quickly.

A terminal's Ctrl-C reaches every process of a launch, launch forwards its own SIGINT right after
(and SIGTERM 5 s later), and users press Ctrl-C twice. rclpy's own handler shuts the context down at
the first signal (too early to send a hold) and raises KeyboardInterrupt at the next one, wherever
main() is, e.g. in the middle of joining a thread that owns an EGL context. Call
:func:`stop_on_signals` after ``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)`` and
:func:`prepare_exit` once main() has cleaned up.
"""

from __future__ import annotations

import gc
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_on_signals() -> threading.Event:
    """SIGINT and SIGTERM from now on set the returned event, however often they come."""
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    return stop


def prepare_exit() -> None:
    """After a clean shutdown: a late Ctrl-C is ignored (while the interpreter exits it puts back
    the default handlers, and the process would die with -2), and what is left is frozen out of the
    garbage collector: the exit's full collections over torch's and transformers' objects took 4-5 s
    on a busy 2-core machine (1 s frozen), long enough for launch to escalate to SIGTERM."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    gc.freeze()
