"""Which state arrivals step the policy, so each robot is controlled at the policy's trained rate."""

from __future__ import annotations


class ControlSchedule:
    """Per-robot decimation of state arrivals to ``rate_hz``, by measurement stamp.

    A robot's state that arrives at stamp ``t`` runs the policy when ``t >= due - period / 2``; the next due
    time is then ``max(due + period, t + period / 2)``. States at the control rate (with jitter below half a
    period) all run; faster streams run on average at ``rate_hz`` (phase-locked to the first run); slower
    streams run on every arrival. A stamp older than the robot's last run (a restarted clock) restarts its
    schedule; a repeated stamp does not run twice.

    Args:
        num_agents: N robots.
        rate_hz: the control rate [Hz], normally the contract's ``ctrl_freq_hz``.
    """

    def __init__(self, num_agents: int, rate_hz: float) -> None:
        if rate_hz <= 0:
            raise ValueError(f"the control rate must be > 0 Hz, got {rate_hz}")
        self.period_ns = round(1e9 / rate_hz)
        self._due_ns: list[int | None] = [None] * num_agents
        self._last_ns: list[int | None] = [None] * num_agents

    def due(self, agent: int, stamp_ns: int) -> bool:
        """Whether the state of ``agent`` stamped ``stamp_ns`` [ns] steps the policy (and book it if so)."""
        half = self.period_ns // 2
        due, last = self._due_ns[agent], self._last_ns[agent]
        if last is not None and stamp_ns < last:
            due = None  # the clock went backwards: start over
        if due is not None and (stamp_ns < due - half or stamp_ns == last):
            return False
        self._due_ns[agent] = stamp_ns + self.period_ns if due is None else max(due + self.period_ns, stamp_ns + half)
        self._last_ns[agent] = stamp_ns
        return True
