"""The executor of the sim2real nodes: rclpy's EventsExecutor where the installed rclpy has it.

The EventsExecutor holds 1 kHz between processes at a third of the CPU of the SingleThreadedExecutor
(``shared/research/ros2.md`` section 4.1). It is still ``rclpy.experimental``, so older distro installs
fall back to the SingleThreadedExecutor. Spin it with :func:`spin_until_shutdown`, not ``spin()``.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

try:
    from rclpy.experimental import EventsExecutor
except ImportError:  # rclpy without the experimental EventsExecutor
    EventsExecutor = None

SPIN_TIMEOUT_S = 0.25
"""Longest wait of one ``spin_once`` [s]: bounds how long a shutdown takes to notice."""

SHUTDOWN_GRACE_S = 1.0
"""How long an exception from ``spin_once`` waits for the context to go down before it is an error [s]."""


def make_executor(context: Context | None = None) -> Executor:
    """An EventsExecutor on ``context`` (the default context when None), else a SingleThreadedExecutor."""
    if EventsExecutor is not None:
        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def spin_until_shutdown(executor: Executor, context: Context) -> None:
    """Run callbacks until ``context`` shuts down (rclpy's SIGINT/SIGTERM handlers shut it down), then return.

    Waits in ``spin_once`` with a finite timeout: with an infinite one (``spin()``), the EventsExecutor of
    the rclpy 9.1.2 wheels busy-waits on a full core, fires no timer and never returns, not even on shutdown.
    Whatever ``spin_once`` raises while the context goes down is the shutdown itself: ``ExternalShutdownException``,
    ``RCLError`` "the given context is not valid" when the signal lands inside the wait, or pybind11's
    ``RuntimeError`` "Unable to convert call argument '0' to Python object" when it lands during a callback.
    rclpy shuts the context down from its signal-handling thread, so such an error can come a moment before
    ``context.ok()`` turns false: an exception counts as shutdown when the context is down within
    :data:`SHUTDOWN_GRACE_S`, and is raised otherwise.
    """
    while context.ok():
        try:
            executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        except Exception:
            if not _goes_down(context, SHUTDOWN_GRACE_S):
                raise


def _goes_down(context: Context, within_s: float) -> bool:
    """Whether ``context`` is shut down now or within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while context.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def freeze_startup_objects() -> None:
    """Collect the start-up garbage, then exempt every object alive now from later garbage collections.

    A node holds some 40 000 objects after start-up (modules, the policy, rclpy), and a full collection
    scans them all: 10-25 ms on a 2-core machine, which stalls the callbacks of 1-3 control periods at 100 Hz
    (measured on the 4-drone bench). Frozen, they are never scanned, so the collections that still run only
    look at what the callbacks allocated since.
    """
    gc.collect()
    gc.freeze()


def run_node(build: Callable[[], Node], name: str, args: list[str] | None = None) -> int:
    """A node process's ``main``: init rclpy, ``build()`` the node and spin it until SIGINT/SIGTERM (exit 0, also
    during start-up); 1, with the reason on stderr, when ``build`` rejects its parameters (a ``ValueError``)."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = build()
        except ValueError as err:  # BundleError, ContractError and SpecError are ValueErrors too
            print(f"{name}: {err}", file=sys.stderr)
            return 1
        executor = make_executor(node.context)
        executor.add_node(node)
        freeze_startup_objects()
        spin_until_shutdown(executor, node.context)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
