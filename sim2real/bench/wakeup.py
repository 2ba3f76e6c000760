"""The machine's own wake-up latency during a bench run, measured the way ``cyclictest`` measures it.

A process sleeps until a deadline every ``period_s`` (5 ms) and records how late it woke. At ``SCHED_FIFO`` 99,
above every bench process, nothing of the bench can hold it back: what is left is the machine's, the kernel's
non-preemptible sections and, on a virtual machine, the hypervisor taking the virtual CPU away. A control
loop's latency tail cannot be shorter than these stalls where they hit it, so the bench records them beside
its latency (``summary.json``'s ``host``) and a run can be read against the machine it ran on.

On the shared 2-core bench machine the two moved together (``benchmarks/results/ros_loop.json``, run G): of 15
runs of the 4-drone loop with the perturbation hop, the five whose probe p99 was 0.71-2.16 ms had a latency p99
of 5.35-8.65 ms, the ten at 0.11-0.23 ms one of 2.89-5.44 ms (``ros2_ws/README.md``).

Run as a bench process: ``python -m sim2real.bench.wakeup --out FILE.npz [--period-ms 5] [--priority 99]`` until
SIGINT/SIGTERM, then it writes each wake-up's wall-clock time and lateness (:func:`load_wakeups`). When
``SCHED_FIFO`` is refused it says so and measures at normal priority, where the bench's own load is in the
figures too.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.deploy.realtime import MAX_PRIORITY, REFUSED, check_priority, set_process_realtime

PERIOD_S = 0.005
"""Time between two deadlines [s]: 200 wake-ups a second cost under 1 % of a core on the 2-core bench machine
(``cyclictest``'s default, 1 ms, cost about 4 %, taken from the loop it measures), and 15 s give 3000 samples."""


@dataclass(frozen=True)
class Wakeups:
    """The wake-ups of one probe run.

    Attributes:
        time_ns: wall-clock time of each wake-up ``[n]`` [ns, CLOCK_REALTIME, the bag's clock].
        lateness_ns: how long after its deadline each wake-up came ``[n]`` [ns, >= 0].
        period_s: time between deadlines [s].
        priority: the ``SCHED_FIFO`` priority it ran at; 0: normal scheduling (asked for 0, or refused).
    """

    time_ns: np.ndarray
    lateness_ns: np.ndarray
    period_s: float
    priority: int

    def summary(self, from_ns: int = 0, to_ns: int | None = None) -> dict[str, Any]:
        """Count, p50, p99, max and mean lateness [ms] of the wake-ups in ``[from_ns, to_ns]`` (wall clock), with
        the period [ms] and the priority (the summary's ``host``)."""
        from sim2real.bench.metrics import latency_stats  # here: the probe process needs no bag reader

        inside = self.time_ns >= from_ns
        if to_ns is not None:
            inside &= self.time_ns <= to_ns
        return {
            "wakeup_lateness_ms": latency_stats((self.lateness_ns[inside] / 1e6).tolist()),
            "period_ms": self.period_s * 1e3,
            "priority": self.priority,
        }


def measure_wakeups(period_s: float, running: Callable[[], bool]) -> tuple[array, array]:
    """Sleep to a deadline every ``period_s`` [s] while ``running()`` is true; each wake-up's wall-clock time and
    lateness [ns]. Deadlines that passed during a stall are skipped, as ``cyclictest`` does, so one stall is one
    late wake-up."""
    period_ns = round(period_s * 1e9)
    times, lateness = array("q"), array("q")
    deadline = time.monotonic_ns() + period_ns
    while running():
        wait_ns = deadline - time.monotonic_ns()
        if wait_ns > 0:
            time.sleep(wait_ns / 1e9)
        woke = time.monotonic_ns()
        times.append(time.time_ns())
        lateness.append(woke - deadline)
        while deadline <= woke:
            deadline += period_ns
    return times, lateness


def save_wakeups(
    path: Path, times: array | np.ndarray, lateness: array | np.ndarray, period_s: float, priority: int
) -> None:
    """Write one probe run (see :class:`Wakeups`; ``times`` and ``lateness`` in ns) to ``path`` (``.npz``)."""
    np.savez(
        path,
        time_ns=np.asarray(times, dtype=np.int64),
        lateness_ns=np.asarray(lateness, dtype=np.int64),
        period_s=period_s,
        priority=priority,
    )


def load_wakeups(path: str | Path) -> Wakeups:
    """A probe run written by :func:`save_wakeups`."""
    with np.load(path) as data:
        return Wakeups(data["time_ns"], data["lateness_ns"], float(data["period_s"]), int(data["priority"]))


def main(argv: list[str] | None = None) -> int:
    """The probe process: measure until SIGINT/SIGTERM, then write ``--out``; 0, or 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="python -m sim2real.bench.wakeup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the .npz file to write the wake-ups to")
    parser.add_argument("--period-ms", type=float, default=PERIOD_S * 1e3, help="time between deadlines [ms]")
    parser.add_argument("--priority", type=int, default=MAX_PRIORITY, help="SCHED_FIFO priority; 0: normal")
    args = parser.parse_args(argv)
    if not args.period_ms > 0:
        parser.error(f"--period-ms must be > 0, got {args.period_ms}")
    try:
        priority = check_priority(args.priority)
    except ValueError as err:
        parser.error(f"--priority: {err}")
    if priority:
        try:
            set_process_realtime(priority)
        except OSError as err:
            print(f"wakeup probe: {err}; {REFUSED}", file=sys.stderr)
            priority = 0
    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    times, lateness = measure_wakeups(args.period_ms / 1e3, lambda: not stopped)
    save_wakeups(args.out, times, lateness, args.period_ms / 1e3, priority)
    print(f"wakeup probe: {len(times)} wake-ups at SCHED_FIFO {priority} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
