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
from rclpy.exceptions import ParameterException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from sim2real.deploy.realtime import REFUSED, check_priority, set_process_realtime

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
    during start-up); 1, with the reason on stderr, when ``build`` rejects its parameters (a ``ValueError``) or
    a parameter has the wrong type.

    Every node gets the parameter ``realtime_priority`` (default 0, normal scheduling): 1-99 puts all the
    process's threads on ``SCHED_FIFO`` at that priority once the node is built, so start-up (imports, loading
    the bundle) still runs at normal priority. Refused (no permission), the node says so and runs at normal
    priority (:mod:`sim2real.deploy.realtime`).
    """
    rclpy.init(args=args)
    node, executor = None, None
    try:
        try:
            node = build()
            priority = check_priority(node.declare_parameter("realtime_priority", 0).value)
        except (ValueError, ParameterException) as err:  # BundleError, ContractError, SpecError are ValueErrors
            print(f"{name}: {err}", file=sys.stderr)
            return 1
        executor = make_executor(node.context)
        executor.add_node(node)
        freeze_startup_objects()
        if priority:
            _go_realtime(node, priority)
        spin_until_shutdown(executor, node.context)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:  # a signal during start-up: rclpy calls on the dying context fail (RCLError)
        if not _goes_down(rclpy.get_default_context(), SHUTDOWN_GRACE_S):
            raise
    finally:
        if executor is not None:  # shut down and freed before the node: the EventsExecutor's destructor
            executor.shutdown()  # detaches from the node's timers, a use-after-free once they are destroyed
            executor = None
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def _go_realtime(node: Node, priority: int) -> None:
    """Put the node's process on ``SCHED_FIFO`` at ``priority`` and log the outcome (a warning when refused)."""
    try:
        threads = set_process_realtime(priority)
    except OSError as err:
        node.get_logger().warning(f"{err}; {REFUSED}")
        return
    node.get_logger().info(f"real-time: SCHED_FIFO priority {priority} on {threads} threads")
