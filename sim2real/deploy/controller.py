"""The swarm controller: robot states in, guarded commands out, for one exported drone policy.

The ROS 2 policy node calls :meth:`SwarmController.on_state_rows` with the state messages that have arrived,
publishes the commands it returns with the returned stamps, calls :meth:`SwarmController.watchdog` at the
control rate and publishes those too, and reports :meth:`SwarmController.status` as diagnostics.

Control is event-driven: a robot's state arrival steps that robot's policy at once (one onnxruntime call for
it and every robot whose state arrived with it; the neighbours are the other robots' latest states),
decimated to the control rate by :class:`ControlSchedule`. Compared with a control timer this adds no wait for
the next tick (up to one period of latency, ``shared/research/ros2.md`` section 4.2 and pitfall 10) and
follows a simulator's clock in lock step. Silence cannot trigger an event, so the watchdog, on a timer, sends
the safe command to robots whose state is missing or stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim2real.deploy.command import CommandSpec
from sim2real.deploy.failsafe import Failsafe, GuardedCommand
from sim2real.deploy.observation import SwarmObserver
from sim2real.deploy.schedule import ControlSchedule
from sim2real.deploy.state import RobotState, SwarmState, agent_index

LEVELS = {"missing": "STALE", "stale": "STALE", "no_target": "STALE"}
"""Diagnostic level per fault; the other faults (non-finite observation or command) are ERROR."""


@dataclass(frozen=True)
class AgentCommand:
    """A command for robot ``agent``, stamped with the state stamp that produced it [ns] (the current time
    for watchdog commands, which no state produced)."""

    agent: int
    guarded: GuardedCommand
    stamp_ns: int


@dataclass(frozen=True)
class AgentStatus:
    """A robot's health for diagnostics: ``level`` is ``OK``, ``WARN`` (last command clamped or rate-limited),
    ``STALE`` (missing or stale state, no target) or ``ERROR`` (non-finite observation or command)."""

    level: str
    message: str
    values: dict[str, str]


class SwarmController:
    """Runs an exported drone policy for ``N`` robots: observations, inference, failsafe, command guard.

    Args:
        policy: an ``OnnxPolicy`` (anything with ``contract`` and ``command(obs [B, D], agent_ids)``).
        targets: initial target positions ``[N, 3]`` [m], world frame; None or NaN rows for none yet.
        rate_hz: control rate [Hz]; default the contract's ``ctrl_freq_hz``.
        stale_timeout_s: state age [s] beyond which a robot is stale; default three control periods.
        max_step_fraction: rate limit per control step as a fraction of each command component's range
            (``high - low``); 0 for none.
    """

    def __init__(
        self,
        policy: Any,
        *,
        targets: np.ndarray | None = None,
        rate_hz: float | None = None,
        stale_timeout_s: float | None = None,
        max_step_fraction: float = 0.0,
    ) -> None:
        contract = policy.contract
        self.policy = policy
        self.spec = CommandSpec.from_contract(contract)
        self.observer = SwarmObserver(contract)
        self.num_agents = self.observer.num_agents
        self.rate_hz = float(rate_hz or contract["ctrl_freq_hz"] or 0.0)
        if self.rate_hz <= 0:
            raise ValueError("the policy's contract has no control rate: give rate_hz")
        self.schedule = ControlSchedule(self.num_agents, self.rate_hz)
        if max_step_fraction < 0:
            raise ValueError(f"max_step_fraction must be >= 0, got {max_step_fraction}")
        max_step = max_step_fraction * (self.spec.high - self.spec.low) if max_step_fraction > 0 else None
        timeout = stale_timeout_s if stale_timeout_s else 3.0 / self.rate_hz
        self.failsafe = Failsafe(
            self.num_agents, self.spec.safe_command(), self.spec.low, self.spec.high, timeout, max_step
        )
        self.state = SwarmState(self.num_agents)
        self.targets = np.full((self.num_agents, 3), np.nan)
        if targets is not None:
            self.targets[:] = np.asarray(targets, dtype=np.float64).reshape(self.num_agents, 3)
        self.last_action = np.tile(self.spec.to_action(self.spec.safe_command()), (self.num_agents, 1))
        self.last_limited = np.zeros(self.num_agents, dtype=bool)

    def set_target(self, agent: int, position: np.ndarray) -> None:
        """Robot ``agent``'s target position ``[3]`` [m], world frame (a navigation goal for navigation policies)."""
        self.targets[agent] = position

    def has_targets(self, agents: Sequence[int]) -> list[bool]:
        """Whether robots ``agents`` have their targets (navigation policies need every goal)."""
        finite = np.isfinite(self.targets).all(axis=1)
        if self.observer.shares_targets:
            return [bool(finite.all())] * len(agents)
        return finite[list(agents)].tolist()

    def on_state(self, agent: int, state: RobotState, now_ns: int) -> AgentCommand | None:
        """Store robot ``agent``'s new state; step its policy if the schedule says so (else None)."""
        commands = self.on_states({agent: state}, now_ns)
        return commands[0] if commands else None

    def on_states(self, states: dict[int, RobotState], now_ns: int) -> list[AgentCommand]:
        """:meth:`on_state_rows` for states given as agent -> :class:`RobotState`."""
        if not states:
            return []
        rows = np.stack([state.row() for state in states.values()])
        return self.on_state_rows(list(states), rows, [state.stamp_ns for state in states.values()], now_ns)

    def on_state_rows(
        self, agents: Sequence[int], rows: np.ndarray, stamps_ns: Sequence[int], now_ns: int
    ) -> list[AgentCommand]:
        """Store new states of several robots at once: robot ``agents[k]``'s state row ``rows[k]`` (``[k, 13]``,
        :meth:`RobotState.row`) stamped ``stamps_ns[k]`` [ns] (a robot given twice: its last row counts). Step the
        policy of those the schedule says are due, in one observation pass and one onnxruntime call, and return
        their commands in the order of ``agents``.

        Every due robot observes all the new states, its neighbours' included: a burst of states that
        arrived together (a swarm driver publishes all robots at once) costs one inference, not one per robot.
        """
        latest = {agent: k for k, agent in enumerate(agents)}
        if len(latest) < len(agents):
            agents, rows = list(latest), rows[list(latest.values())]
            stamps_ns = [stamps_ns[k] for k in latest.values()]
        self.state.update_rows(agents, rows, stamps_ns)
        stamps = dict(zip(agents, stamps_ns, strict=True))
        due = [agent for agent, stamp in stamps.items() if self.schedule.due(agent, stamp)]
        if not due:
            return []
        obs = self.observer.observe(self.state, self.targets, self.last_action)[agent_index(due, self.num_agents)]
        obs_finite = np.isfinite(obs).all(axis=1).tolist()
        faults = [
            self.failsafe.input_fault(self.state.age_s(agent, now_ns), has_target, finite)
            for agent, has_target, finite in zip(due, self.has_targets(due), obs_finite, strict=True)
        ]
        flying = [fault is None for fault in faults]
        commands = None
        if all(flying):  # the usual burst: no row to leave out
            commands = self.policy.command(obs, agent_ids=due)
        elif any(flying):
            commands = np.full((len(due), self.spec.size), np.nan)
            in_control = [agent for agent, fly in zip(due, flying, strict=True) if fly]
            commands[flying] = self.policy.command(obs[flying], agent_ids=in_control)
        return self._send(due, faults, commands, [stamps[agent] for agent in due])

    def watchdog(self, now_ns: int) -> list[AgentCommand]:
        """Safe commands stamped ``now_ns`` for robots whose state is missing or stale; call at the control rate."""
        faults = [self.failsafe.input_fault(self.state.age_s(a, now_ns), True) for a in range(self.num_agents)]
        agents = [agent for agent, fault in enumerate(faults) if fault is not None]
        if not agents:
            return []
        return self._send(agents, [faults[agent] for agent in agents], None, [now_ns] * len(agents))

    def _send(
        self, agents: list[int], faults: list[str | None], commands: np.ndarray | None, stamps_ns: list[int]
    ) -> list[AgentCommand]:
        """Guard the commands ``[K, A]`` of robots ``agents`` (None: all faulted) in one pass and stamp them."""
        guarded = self.failsafe.guard_many(agents, faults, commands)
        index = agent_index(agents, self.num_agents)
        self.last_action[index] = self.spec.to_action(self.failsafe.last_command[index])  # the guarded commands
        self.last_limited[index] = [g.limited for g in guarded]
        return [AgentCommand(a, g, stamp) for a, g, stamp in zip(agents, guarded, stamps_ns, strict=True)]

    def status(self, agent: int, now_ns: int) -> AgentStatus:
        """Robot ``agent``'s diagnostic level, a one-line message and key values (strings)."""
        fault = self.failsafe.fault[agent]
        age = self.state.age_s(agent, now_ns)
        values = {
            "fault": fault or "none",
            "obs_age_ms": "never" if age is None else f"{age * 1e3:.1f}",
            "last_command": " ".join(f"{v:.4g}" for v in self.failsafe.last_command[agent]),
            "command_unit": self.spec.unit,
        }
        values |= {key: str(count) for key, count in self.failsafe.counts(agent).items()}
        if fault is not None:
            return AgentStatus(LEVELS.get(fault, "ERROR"), f"failsafe: {fault}", values)
        if self.last_limited[agent]:
            return AgentStatus("WARN", "policy in control, command clamped or rate-limited", values)
        return AgentStatus("OK", "policy in control", values)
