"""The same perturbation objects on one robot's message stream (what the ROS 2 perturbation node calls).

One :class:`StreamPerturber` serves one robot (``agent`` of a swarm of ``num_agents``). It runs the batch
code on a ``[1, num_agents, D]`` buffer whose row ``agent`` holds the message, so every robot's perturber
built from the same spec and seed draws the same agent selection (``random:K`` picks the same robots on
all of them), and a robot's stream gets exactly the values agent ``agent`` of a one-env
:class:`~sim2real.perturb.wrapper.PerturbedEnv` with that seed would get. One call is one step (one
message at the nominal rate). Its ground truth (:attr:`StreamPerturber.log`) records this robot's hits only.
Dynamics kinds need the simulator and are rejected here (the bench applies them in the sim bridge);
adversarial malicious agents need the whole swarm's observations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim2real.perturb.adversarial import AttackTarget
from sim2real.perturb.base import Context, layout_from
from sim2real.perturb.pipeline import Pipeline
from sim2real.perturb.spec import Spec, SpecError
from sim2real.perturb.timing import TimingFault


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
            if p.channel in ("action", "agents") or getattr(p, "stage", None) == "action":
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
