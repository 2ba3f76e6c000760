"""Real-time scheduling of a node process: every thread at one ``SCHED_FIFO`` priority.

On Linux a thread at a ``SCHED_FIFO`` priority runs as soon as it is woken, ahead of every normal
(``SCHED_OTHER``) thread, and keeps the core until it blocks or a higher priority wakes. A control node whose
rclpy executor and middleware (Fast DDS) threads are real-time therefore answers a message without waiting
for a simulator step or a bag write that happens to hold the core. On the 2-core bench it shortened the latency
tail of the 4-drone loop with the perturbation hop and kept 16 drones with the hop near the control rate; without
the hop its effect was within the run-to-run noise (``ros2_ws/README.md``). The kernel still keeps 5 % of each core for
normal threads (``/proc/sys/kernel/sched_rt_runtime_us``), so a runaway real-time node cannot lock a machine.

Setting it needs root, ``CAP_SYS_NICE`` or a real-time limit (``ulimit -r``, ``rtprio`` in
``/etc/security/limits.conf``); the nodes ask for it with the parameter ``realtime_priority`` and, when it is
refused, say so and run at normal priority.
"""

from __future__ import annotations

import os

MAX_PRIORITY = 99
"""Highest ``SCHED_FIFO`` priority on Linux; 0 means normal scheduling."""

REFUSED = "running at normal priority"
"""What a node logs when its ``realtime_priority`` was refused (the bench looks for it in the logs)."""


def check_priority(priority: int) -> int:
    """``priority`` if it is a valid ``realtime_priority`` (0 = normal scheduling, 1-99 = ``SCHED_FIFO``)."""
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise ValueError(
            f"realtime_priority must be an integer from 0 (normal scheduling) to {MAX_PRIORITY}, got {priority!r}"
        )
    return priority


def set_process_realtime(priority: int) -> int:
    """Put every thread of this process on ``SCHED_FIFO`` at ``priority`` (1-99); returns the number of threads.

    Threads started later inherit the policy of the thread that starts them. Raises ``PermissionError`` (with
    how to allow it) when the process may not, ``OSError`` where the platform has no ``SCHED_FIFO``.
    """
    if check_priority(priority) == 0:
        raise ValueError("realtime_priority 0 is normal scheduling: there is no SCHED_FIFO priority to set")
    if not hasattr(os, "sched_setscheduler"):
        raise OSError("this platform has no SCHED_FIFO (os.sched_setscheduler); leave realtime_priority at 0")
    param = os.sched_param(priority)
    seen: set[int] = set()
    threads = 0
    try:
        while new := {int(tid) for tid in os.listdir("/proc/self/task")} - seen:  # again for threads started meanwhile
            for tid in new:
                try:
                    os.sched_setscheduler(tid, os.SCHED_FIFO, param)
                    threads += 1
                except ProcessLookupError:  # the thread ended since the listing
                    pass
            seen |= new
    except PermissionError as err:
        raise PermissionError(
            f"SCHED_FIFO priority {priority} refused ({err.strerror}): it needs root, CAP_SYS_NICE or a real-time "
            f"limit of at least {priority} (ulimit -r, or rtprio in /etc/security/limits.conf)"
        ) from err
    return threads


def runs_realtime() -> bool:
    """Whether the calling thread runs on a real-time policy (``SCHED_FIFO`` or ``SCHED_RR``)."""
    if not hasattr(os, "sched_getscheduler"):
        return False
    return os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
