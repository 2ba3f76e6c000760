"""The same perturbation objects on one robot's message stream (what the ROS 2 perturbation node calls).

One :class:`StreamPerturber` serves one robot (``agent`` of a swarm of ``num_agents``). It runs the batch
code on a ``[1, num_agents, D]`` buffer whose row ``agent`` holds the message, so every robot's perturber
built from the same spec and seed draws the same agent selection (``random:K`` picks the same robots on
all of them), and a robot's stream gets exactly the values agent ``agent`` of a one-env
:class:`~sim2real.perturb.wrapper.PerturbedEnv` with that seed would get. One call is one step (one
message at the nominal rate). Its ground truth (:attr:`StreamPerturber.log`) records this robot's hits only.
Dynamics kinds need the simulator and are rejected here (the bench applies them in the sim bridge);
adversarial malicious agents need the whole swarm's observations.

A :class:`BurstPerturber` serves a whole swarm whose messages come in bursts (a swarm driver publishes every
robot's state at once): one pipeline call per burst where the spec allows it, else one stream per robot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.perturb.adversarial import AttackTarget
from sim2real.perturb.base import Context, Perturbation, layout_from
from sim2real.perturb.pipeline import Pipeline
from sim2real.perturb.spec import Spec, SpecError, parse_spec
from sim2real.perturb.timing import TimingFault


def acts_on_commands(p: Perturbation) -> bool:
    """Whether perturbation ``p`` acts on the command stream (action and malicious kinds, command-link timing)
    rather than the observation (sensor) stream."""
    return p.channel in ("action", "agents") or getattr(p, "stage", None) == "action"


class StreamPerturber:
    """Perturbs one robot's observation (sensor) and command messages, message by message.

    Args:
        spec: a perturbation spec.
        layout: the message's fields: an env's ``obs_layout`` or ``{name: size}`` such as
            ``{"pos": 3, "quat": 4, "vel": 3, "ang_vel": 3}`` (field names double as sensor names).
        act_dim: command size (0: no command stream).
        agent, num_agents: which robot of how many.
        seed: seeds the perturbations (default: the spec's seed).
        target: for ``adv.*`` attacks on this robot's observation.
        log_capacity: rows of ground truth :attr:`log` keeps (0: only its counts, as a long-running node needs).
    """

    def __init__(
        self,
        spec: Spec | dict | list | str | Path | None,
        layout: Any,
        *,
        act_dim: int = 0,
        agent: int = 0,
        num_agents: int = 1,
        seed: int | None = None,
        target: AttackTarget | None = None,
        log_capacity: int = 200_000,
    ) -> None:
        if not 0 <= agent < num_agents:
            raise ValueError(f"agent {agent} is outside the swarm of {num_agents} (0..{num_agents - 1})")
        ctx = Context(
            num_envs=1, num_agents=num_agents, obs_layout=layout_from(layout), act_dim=act_dim, dt=1.0, target=target
        )
        self.pipeline = Pipeline(spec, ctx, seed, log_capacity=log_capacity, log_agent=agent)
        for p in self.pipeline.items:
            if p.kind == "agents.malicious" and p.p["mode"] == "adversarial":
                raise SpecError(f"{p.where}: adversarial malicious agents need the whole swarm; use them in simulation")
            if acts_on_commands(p):
                if act_dim == 0:
                    raise SpecError(f"{p.where}: acts on commands but this stream has no command (act_dim=0)")
        self.log = self.pipeline.log
        self.agent = agent
        self.obs_step = 0  # episode steps of each stream
        self.act_step = 0
        self._global_obs = 0  # steps since construction (the `global` clock)
        self._global_act = 0
        self._pending_reset = False  # construction already started the first episode
        self._obs = np.zeros((1, num_agents, ctx.obs_dim), dtype=np.float32)
        self._act = np.zeros((1, num_agents, act_dim), dtype=np.float32)

    def reset(self) -> None:
        """A new episode (run): agent selection, schedules and state restart (before the first message: no-op)."""
        if self._pending_reset:
            self.pipeline.reset(np.array([0]))
        self._pending_reset = False
        self.obs_step = 0
        self.act_step = 0

    def set_enabled(self, on: bool, name: str | None = None) -> None:
        self.pipeline.set_enabled(on, name)

    def _fresh(self, stage: str) -> bool:
        return all(
            bool(p.delivered_new[0, self.agent]) for p in self.pipeline.stage(stage) if isinstance(p, TimingFault)
        )

    def observe(self, message: np.ndarray) -> np.ndarray | None:
        """The observation message to pass on now, or None when nothing new is delivered (lost or late)."""
        self._obs[0, self.agent] = self._check(message, self._obs.shape[-1], "observation")
        step = np.array([self.obs_step])
        out = self.pipeline.observations(self._obs.copy(), step, self._global_obs)
        self.obs_step += 1
        self._global_obs += 1
        self._pending_reset = True
        return out[0, self.agent].copy() if self._fresh("obs_timing") else None

    def command(self, message: np.ndarray) -> np.ndarray | None:
        """The command message to pass on now, or None when nothing new is delivered."""
        self._act[0, self.agent] = self._check(message, self._act.shape[-1], "command")
        step = np.array([self.act_step])
        out = self.pipeline.actions(self._act.copy(), None, step, self._global_act)
        self.act_step += 1
        self._global_act += 1
        self._pending_reset = True
        return out[0, self.agent].copy() if self._fresh("action_timing") else None

    @staticmethod
    def _check(message: np.ndarray, size: int, what: str) -> np.ndarray:
        v = np.asarray(message, dtype=np.float32).reshape(-1)
        if v.shape != (size,):
            raise ValueError(f"{what} message has {v.size} values, the layout has {size}")
        return v


class BurstPerturber:
    """Perturbs a swarm's observation (sensor) and command messages a burst at a time.

    A burst is the messages that arrived together: robot ``agents[k]`` sent ``messages[k]``; a robot can appear
    more than once (its messages in order). When every perturbation of the spec is step-free
    (:attr:`~sim2real.perturb.base.Perturbation.step_free`: a memoryless kind on the default schedule, such as
    Gaussian noise, bias, spikes, clipping or scaling), the robots of a burst go through one pipeline call over
    the whole swarm (``[1, num_agents, D]``, each robot in its row): one call per burst instead of one per robot
    (:attr:`swarm` is True). Any other spec runs each message through its own robot's :class:`StreamPerturber`,
    because a robot's delay lines, dropouts, timing faults and schedule count that robot's messages.

    Values: while every burst carries each robot once, both give robot ``i`` exactly what its own
    :class:`StreamPerturber` (agent ``i`` of a one-env :class:`~sim2real.perturb.wrapper.PerturbedEnv` with this
    seed) would give. In a burst with only some robots the swarm call still draws for every row, so from then on
    the values differ from a lone stream's, with the same distribution. Ground truth (:meth:`counts`) counts the
    hits of the robots a burst carried. Arguments as for :class:`StreamPerturber`.
    """

    def __init__(
        self,
        spec: Spec | dict | list | str | Path | None,
        layout: Any,
        *,
        act_dim: int = 0,
        num_agents: int = 1,
        seed: int | None = None,
        log_capacity: int = 200_000,
    ) -> None:
        spec = parse_spec(spec)
        first = StreamPerturber(  # also checks that the spec suits message streams
            spec, layout, act_dim=act_dim, agent=0, num_agents=num_agents, seed=seed, log_capacity=log_capacity
        )
        self.swarm = all(p.step_free for p in first.pipeline.items)
        self.num_agents = num_agents
        if self.swarm:
            self.streams: list[StreamPerturber] = []
            self.pipeline = Pipeline(spec, first.pipeline.ctx, seed, log_capacity=log_capacity)
        else:
            self.streams = [first] + [
                StreamPerturber(
                    spec, layout, act_dim=act_dim, agent=i, num_agents=num_agents, seed=seed, log_capacity=log_capacity
                )
                for i in range(1, num_agents)
            ]
            self.pipeline = first.pipeline
        ctx = first.pipeline.ctx
        self._obs = np.zeros((1, num_agents, ctx.obs_dim), dtype=np.float32)
        self._act = np.zeros((1, num_agents, act_dim), dtype=np.float32)
        self._whole_swarm = list(range(num_agents))
        self.obs_bursts = 0  # swarm calls so far (the pipeline's step count)
        self.act_bursts = 0

    def set_enabled(self, on: bool, name: str | None = None) -> None:
        """Switch one perturbation (by name) or all of them on or off, for every robot."""
        for pipeline in [s.pipeline for s in self.streams] or [self.pipeline]:
            pipeline.set_enabled(on, name)

    def count_pending(self) -> None:
        """Count the hits waiting in the ground truth (:meth:`~sim2real.perturb.base.EventLog.count_pending`)."""
        for pipeline in [s.pipeline for s in self.streams] or [self.pipeline]:
            pipeline.log.count_pending()

    def counts(self, agent: int) -> dict[str, dict[str, float]]:
        """Robot ``agent``'s hits so far per perturbation name: ``{"events", "mean_magnitude"}``."""
        return self.streams[agent].log.counts() if self.streams else self.pipeline.log.counts(agent)

    def observe(self, agents: Sequence[int], messages: np.ndarray) -> list[np.ndarray | None]:
        """The observation messages ``[k, D]`` of robots ``agents`` to pass on now; None where nothing new is
        delivered (lost or late)."""
        robots = self._robots(agents)
        if self.streams:
            return [self.streams[a].observe(m) for a, m in zip(robots, messages, strict=True)]
        return self._burst(robots, messages, self._obs, self._observations, "observation")

    def command(self, agents: Sequence[int], messages: np.ndarray) -> list[np.ndarray | None]:
        """The command messages ``[k, A]`` of robots ``agents`` to pass on now; None where nothing new is delivered."""
        robots = self._robots(agents)
        if self.streams:
            return [self.streams[a].command(m) for a, m in zip(robots, messages, strict=True)]
        return self._burst(robots, messages, self._act, self._actions, "command")

    def _observations(self, x: np.ndarray) -> np.ndarray:
        step = self.obs_bursts
        self.obs_bursts += 1
        return self.pipeline.observations(x, np.array([step]), step)

    def _actions(self, x: np.ndarray) -> np.ndarray:
        step = self.act_bursts
        self.act_bursts += 1
        return self.pipeline.actions(x, None, np.array([step]), step)

    def _robots(self, agents: Sequence[int]) -> list[int]:
        """``agents`` as a list of robot indices, all within the swarm (else ``ValueError``)."""
        robots = [int(a) for a in agents]
        if robots and (min(robots) < 0 or max(robots) >= self.num_agents):
            raise ValueError(f"robots {robots} outside the swarm of {self.num_agents} (0..{self.num_agents - 1})")
        return robots

    def _burst(
        self,
        robots: list[int],
        messages: np.ndarray,
        buffer: np.ndarray,
        run: Callable[[np.ndarray], np.ndarray],
        what: str,
    ) -> list[np.ndarray | None]:
        """Swarm mode: each robot's ``k``-th message of the burst goes in the ``k``-th pipeline call."""
        messages = np.asarray(messages, dtype=np.float32)
        if messages.shape != (len(robots), buffer.shape[-1]):
            expected = (len(robots), buffer.shape[-1])
            raise ValueError(f"{what} messages have shape {messages.shape}, expected {expected}")
        if robots == self._whole_swarm:  # the usual burst: every robot once, in order
            return self._call(buffer, messages, slice(None), run)
        if len(set(robots)) == len(robots):  # each robot once: one call
            calls = [list(range(len(robots)))]
        else:  # calls[c]: the positions in the burst of the robots' c-th messages
            calls, sent = [], {}
            for k, robot in enumerate(robots):
                c = sent[robot] = sent.get(robot, -1) + 1
                if c == len(calls):
                    calls.append([])
                calls[c].append(k)
        out: list[np.ndarray | None] = [None] * len(robots)
        for picked in calls:
            perturbed = self._call(buffer, messages[picked], [robots[k] for k in picked], run)
            for k, values in zip(picked, perturbed, strict=True):
                out[k] = values
        return out

    def _call(
        self,
        buffer: np.ndarray,
        messages: np.ndarray,
        rows: slice | list[int],
        run: Callable[[np.ndarray], np.ndarray],
    ) -> list[np.ndarray | None]:
        """One pipeline call with ``messages`` in the ``rows`` of ``buffer`` (the other robots' rows hold their last
        messages); their perturbed values in that order. Only those robots' hits are recorded."""
        buffer[0, rows] = messages
        log = self.pipeline.log
        if rows != slice(None):  # the whole swarm: every robot's hits count, as with no selection
            log.agents = np.zeros(self.num_agents, dtype=bool)
            log.agents[rows] = True
        try:
            return list(run(buffer.copy())[0, rows])  # rows of a new array
        finally:
            log.agents = None
