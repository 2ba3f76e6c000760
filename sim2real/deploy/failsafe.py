"""Per-robot watchdog and command guard: safe command on bad input or output, clamp, rate limit, counts.

Faults, in the order they are checked:

- ``missing``: the robot never reported a state.
- ``stale``: its latest state is older than ``stale_timeout_s`` (silence, or input delayed that long).
- ``no_target``: it has no target to fly to.
- ``obs_not_finite``: its observation holds NaN or inf.
- ``command_not_finite``: the policy's command for it holds NaN or inf.

A robot with a fault gets the safe command (the command of the zero action: zero velocity for ``vel``
policies, hover RPM for ``rpm`` policies) at once, without rate limit. Without a fault the policy's command
is clamped to the contract's command bounds and then moved at most ``max_step`` per component from the last
command sent. Robots start in failsafe (fault ``missing``) and leave it on the first good step; until then
they are *starting*, and the start-up faults (``missing``, ``no_target``: waiting for the first state and
target) are not counted. Otherwise each change of a robot's fault to another reason counts one entry for
that reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim2real.deploy.state import agent_index

FAULTS = ("missing", "stale", "no_target", "obs_not_finite", "command_not_finite")
STARTUP_FAULTS = {"missing": "its first state", "no_target": "a target"}  # fault -> what a starting robot awaits


@dataclass(frozen=True)
class GuardedCommand:
    """The command to send one robot and why.

    Attributes:
        command: ``[A]`` float64 in command units (m/s or RPM).
        fault: the reason the safe command was sent, None when the policy is in control.
        previous_fault: the robot's fault before this step (None when it was in control).
        limited: the policy's command was clamped or rate-limited.
        starting: the robot has never been in control (its start-up faults are not counted).
    """

    command: np.ndarray
    fault: str | None
    previous_fault: str | None
    limited: bool
    starting: bool = False

    @property
    def changed(self) -> bool:
        """The robot entered, left or changed failsafe on this step."""
        return self.fault != self.previous_fault


class Failsafe:
    """Watchdog and command guard for ``N`` robots (pure numpy; the caller supplies times and commands).

    Args:
        num_agents: N robots.
        safe_command: ``[A]`` command sent on a fault.
        low, high: ``[A]`` command bounds.
        stale_timeout_s: a state older than this [s] is stale.
        max_step: ``[A]`` largest change of a command component per control step (command units), or None
            for no rate limit.
    """

    def __init__(
        self,
        num_agents: int,
        safe_command: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
        stale_timeout_s: float,
        max_step: np.ndarray | None = None,
    ) -> None:
        if stale_timeout_s <= 0:
            raise ValueError(f"stale_timeout_s must be > 0 s, got {stale_timeout_s}")
        self.safe_command = np.asarray(safe_command, dtype=np.float64)
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.stale_timeout_s = float(stale_timeout_s)
        self.max_step = None if max_step is None else np.asarray(max_step, dtype=np.float64)
        if not np.all((self.low <= self.safe_command) & (self.safe_command <= self.high)):
            raise ValueError(f"safe command {self.safe_command} is outside the command bounds {self.low}..{self.high}")
        self.last_command = np.tile(self.safe_command, (num_agents, 1))
        # per-robot bookkeeping in Python lists: a step touches a few robots, where numpy indexing costs more
        self.fault: list[str | None] = ["missing"] * num_agents
        self.started = [False] * num_agents
        self.entries = {reason: [0] * num_agents for reason in FAULTS}
        self.commands = [0] * num_agents
        self.safe_commands = [0] * num_agents
        self.limited_commands = [0] * num_agents

    def input_fault(self, age_s: float | None, has_target: bool, obs_finite: bool = True) -> str | None:
        """The fault of a robot's input, or None.

        Args:
            age_s: age of its latest state [s] (None: it never reported).
            has_target: whether it has a target.
            obs_finite: whether its observation is all finite (True where none was built, e.g. the periodic
                watchdog check).
        """
        if age_s is None:
            return "missing"
        if age_s > self.stale_timeout_s:
            return "stale"
        if not has_target:
            return "no_target"
        if not obs_finite:
            return "obs_not_finite"
        return None

    def guard(self, agent: int, fault: str | None, command: np.ndarray | None = None) -> GuardedCommand:
        """The command to send robot ``agent``: the safe one on ``fault``, else ``command [A]`` guarded."""
        return self.guard_many([agent], [fault], None if command is None else np.reshape(command, (1, -1)))[0]

    def guard_many(
        self, agents: Sequence[int], faults: Sequence[str | None], commands: np.ndarray | None = None
    ) -> list[GuardedCommand]:
        """The commands to send robots ``agents`` (distinct), in one numpy pass: the safe command for those with a
        fault, else their row of ``commands [K, A]`` guarded (rows of faulted robots are ignored; None: no
        command, so a robot without a fault gets ``command_not_finite``)."""
        idx = agent_index(agents, len(self.fault))
        shape = (len(agents), len(self.safe_command))
        proposed = np.full(shape, np.nan) if commands is None else np.asarray(commands, np.float64).reshape(shape)
        finite = np.isfinite(proposed).all(axis=1).tolist()
        faults = [f if f is not None or ok else "command_not_finite" for f, ok in zip(faults, finite, strict=True)]
        failed = [f is not None for f in faults]
        low, high = self.low, self.high
        if self.max_step is not None:  # the bounds and the step from the last command, which lies within them
            last = self.last_command[idx]
            low, high = np.maximum(low, last - self.max_step), np.minimum(high, last + self.max_step)
        out = np.minimum(np.maximum(proposed, low), high)
        if any(failed):
            out[failed] = self.safe_command
        limited = (out != proposed).any(axis=1).tolist()
        guarded = []
        for j, agent in enumerate(agents):
            fault, previous, starting = faults[j], self.fault[agent], not self.started[agent]
            if fault is None:
                self.started[agent] = True
                self.limited_commands[agent] += limited[j]
            else:
                self.safe_commands[agent] += 1
                if fault != previous and not (starting and fault in STARTUP_FAULTS):
                    self.entries[fault][agent] += 1
            self.fault[agent] = fault
            self.commands[agent] += 1
            guarded.append(
                GuardedCommand(out[j], fault, previous, fault is None and limited[j], starting and fault is not None)
            )
        self.last_command[idx] = out
        return guarded

    def counts(self, agent: int) -> dict[str, int]:
        """Counters of robot ``agent``: commands, safe and limited commands, and failsafe entries per fault."""
        counts = {
            "commands": int(self.commands[agent]),
            "safe_commands": int(self.safe_commands[agent]),
            "limited_commands": int(self.limited_commands[agent]),
        }
        counts |= {f"entries_{reason}": int(self.entries[reason][agent]) for reason in FAULTS}
        return counts
