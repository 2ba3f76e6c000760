"""Warm-up before each burst: a node re-runs its burst work on a copy shortly before the next burst is due.

At 100 Hz a node sleeps about 9 ms between two bursts, and on a small machine shared with the simulator
and the other nodes its code and data leave the CPU caches meanwhile: the perturbation node's work on a burst
of 4 odometry messages took 0.78 ms (p50) after a 10 ms sleep and 0.46 ms when the same work had run on a copy
1 ms before (local probe, 2 cores). :class:`BurstWarmer` runs such a copy (the node's ``warm`` function, which
must publish nothing and leave the node's state alone) ``lead_s`` before the next burst is due, from the
bursts' own period and phase. It costs each node one more pass of its burst work per period.

On the 4-drone bench with the perturbation hop it helped on ``SCHED_FIFO`` and not under normal scheduling,
where the extra CPU time left the median as it was and lengthened the tail (``benchmarks/results/ros_loop.json``,
``ros2_ws/README.md``), so by default it runs only while the node's thread is on a real-time policy.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from rclpy.clock import Clock, ClockType
from rclpy.node import Node

from sim2real.deploy.realtime import runs_realtime

DEFAULT_LEAD_S = 0.0025
"""How long before the next burst the warm-up runs [s]: its effect wears off within a few milliseconds, and
earlier than the arrival jitter it does not collide with the burst."""

SAME_BURST_S = 0.001
"""Arrivals closer than this [s] to the one before are the same burst, split by the scheduler."""

PERIOD_WINDOW = 8
"""Number of intervals between bursts whose median is the burst period."""


class BurstPeriod:
    """The period of bursts from their arrival times: the median of the last :data:`PERIOD_WINDOW` intervals
    between burst starts (a missed burst, one interval of two periods, does not move it). An arrival less than
    :data:`SAME_BURST_S` after the previous one belongs to the same burst."""

    def __init__(self) -> None:
        self.last_ns: int | None = None
        self.intervals: deque[int] = deque(maxlen=PERIOD_WINDOW)

    def arrived(self, now_ns: int) -> bool:
        """Record an arrival at ``now_ns`` [ns, monotonic]; whether it starts a new burst."""
        if self.last_ns is not None:
            interval = now_ns - self.last_ns
            if interval < SAME_BURST_S * 1e9:
                return False
            self.intervals.append(interval)
        self.last_ns = now_ns
        return True

    @property
    def period_ns(self) -> int | None:
        """The median interval [ns]; None before :data:`PERIOD_WINDOW` // 2 intervals were seen."""
        if len(self.intervals) < PERIOD_WINDOW // 2:
            return None
        return sorted(self.intervals)[len(self.intervals) // 2]


class BurstWarmer:
    """Runs ``warm()`` ``lead_s`` [s] before the next burst of ``node`` is due.

    The node calls :meth:`arrived` as a burst's callback starts. A steady-clock timer is re-armed at the start
    of every burst to fire ``period - lead_s`` later, so it follows the bursts' phase; when no burst came since
    the last warm-up (the stream paused or stopped) it stops until the next one. Bursts closer together than
    twice ``lead_s`` are not warmed: their code stays warm by itself. ``fires`` counts the warm-ups.

    Args:
        node: the node whose timer runs the warm-ups.
        lead_s: how long before the next burst [s]; > 0.
        warm: the node's burst work on a copy of its last burst: publishes nothing, changes no state.
        realtime_only: warm up only while the node's callbacks run on ``SCHED_FIFO``/``SCHED_RR``.
    """

    def __init__(self, node: Node, lead_s: float, warm: Callable[[], None], *, realtime_only: bool = True) -> None:
        if lead_s <= 0:
            raise ValueError(f"the warm-up lead must be > 0 s, got {lead_s}")
        self.lead_ns = round(lead_s * 1e9)
        self.warm = warm
        self.realtime_only = realtime_only
        self.period = BurstPeriod()
        self.fires = 0
        self.timer_period_ns = 10**9
        self.timer = node.create_timer(
            self.timer_period_ns / 1e9, self._fire, clock=Clock(clock_type=ClockType.STEADY_TIME), autostart=False
        )
        self.waiting = False  # a burst arrived since the last warm-up

    def arrived(self) -> None:
        """A burst's callback has started: re-arm the warm-up for the next one."""
        if self.realtime_only and not runs_realtime():
            return
        if not self.period.arrived(time.monotonic_ns()):
            return
        period_ns = self.period.period_ns
        if period_ns is None or period_ns < 2 * self.lead_ns:
            self.timer.cancel()
            return
        if abs(period_ns - self.lead_ns - self.timer_period_ns) > 0.05 * period_ns:
            self.timer_period_ns = period_ns - self.lead_ns
            self.timer.timer_period_ns = self.timer_period_ns
        self.waiting = True
        self.timer.reset()

    def _fire(self) -> None:
        if not self.waiting:  # no burst since the last warm-up: wait for the next one
            self.timer.cancel()
            return
        self.waiting = False
        self.warm()
        self.fires += 1


def declare_warmup(node: Node, warm: Callable[[], None]) -> BurstWarmer | None:
    """``node``'s parameters ``warmup_lead_s`` [s] (default :data:`DEFAULT_LEAD_S`; 0: no warm-up) and
    ``warmup_realtime_only`` (default true: only on a real-time policy) as a :class:`BurstWarmer` of ``warm``,
    None when the lead is 0.

    Raises:
        ValueError: a negative lead.
    """
    lead_s = node.declare_parameter("warmup_lead_s", DEFAULT_LEAD_S).value
    if lead_s < 0:
        raise ValueError(f"parameter 'warmup_lead_s' must be >= 0 s (0: no warm-up), got {lead_s}")
    realtime_only = node.declare_parameter("warmup_realtime_only", True).value
    return BurstWarmer(node, lead_s, warm, realtime_only=realtime_only) if lead_s > 0 else None
