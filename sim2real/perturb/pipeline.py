"""A spec turned into bound perturbation objects, run stage by stage in a fixed order.

Actions go: ``agents.*`` (malicious teammates) -> ``timing.*(on=action)`` (the command link) ->
``action.*`` (actuator faults) -> robot. Observations go: ``obs.*`` (sensor faults) ->
``timing.*(on=obs)`` (the sensor link) -> ``adv.*`` (attacks on what the policy receives) -> policy.
Within a stage perturbations run in spec order. ``dynamics.*`` write simulator parameters (see
:class:`sim2real.perturb.wrapper.PerturbedEnv`).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from sim2real.perturb.base import Context, EventLog, Perturbation
from sim2real.perturb.registry import KINDS
from sim2real.perturb.spec import Spec, parse_spec

ACTION_STAGES = ("agents", "action_timing", "action")
OBS_STAGES = ("obs", "obs_timing", "attack")


def _stage(p: Perturbation) -> str:
    if p.channel == "timing":
        return f"{p.stage}_timing"
    return p.channel


class Pipeline:
    """The bound perturbations of one spec; ``seed`` (or the spec's) seeds each one independently.

    ``log_capacity`` and ``log_agent`` configure the ground truth (:class:`EventLog`): rows kept, and the one
    agent whose hits it records (None: all).
    """

    def __init__(
        self,
        spec: Spec | dict | list | str | Path | None,
        ctx: Context,
        seed: int | None = None,
        log_capacity: int = 200_000,
        log_agent: int | None = None,
    ) -> None:
        self.spec = parse_spec(spec)
        self.ctx = ctx
        self.log = EventLog(log_capacity, log_agent)
        self.items = [KINDS[s.kind](s, i) for i, s in enumerate(self.spec.perturbations)]
        self.by_stage: dict[str, list[Perturbation]] = {}
        for p in self.items:
            self.by_stage.setdefault(_stage(p), []).append(p)
        self.seed(self.spec.seed if seed is None else seed)

    def seed(self, seed: int | list[int] | None) -> None:
        """(Re)seed and rebind every perturbation: all state restarts, switches keep their position.

        Each perturbation's stream is keyed by its name, or by its kind and its rank among entries of that
        kind, so adding other kinds to a spec does not change its draws.
        """
        root = np.random.SeedSequence(seed)
        seen: dict[str, int] = {}
        for p in self.items:
            key = p.spec.name or f"{p.kind}#{seen.get(p.kind, 0)}"
            seen[p.kind] = seen.get(p.kind, 0) + 1
            child = np.random.SeedSequence([*root.generate_state(4), zlib.crc32(key.encode())])
            p.bind(self.ctx, np.random.default_rng(child), self.log)

    def stage(self, name: str) -> list[Perturbation]:
        return self.by_stage.get(name, [])

    def reset(self, env_ids: np.ndarray) -> None:
        """New episodes in ``env_ids``."""
        for p in self.items:
            p.reset(env_ids)

    def actions(
        self,
        actions: np.ndarray,
        obs: np.ndarray | None,
        episode_step: np.ndarray,
        global_step: int,
    ) -> np.ndarray:
        """Actions ``[E, N, A]`` as the robots receive them."""
        for p in self.stage("agents"):
            actions = p.apply(actions, obs, episode_step, global_step)
        for name in ("action_timing", "action"):
            for p in self.stage(name):
                actions = p.apply(actions, episode_step, global_step)
        return actions

    def observations(self, obs: np.ndarray, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        """Observations ``[E, N, D]`` as the policy receives them."""
        for name in OBS_STAGES:
            for p in self.stage(name):
                obs = p.apply(obs, episode_step, global_step)
        return obs

    def get(self, name: str) -> Perturbation:
        """The perturbation labelled ``name`` (its spec ``name``, or ``"<index>:<kind>"``)."""
        for p in self.items:
            if p.name == name:
                return p
        raise KeyError(f"no perturbation named {name!r}; names are {[p.name for p in self.items]}")

    def set_enabled(self, on: bool, name: str | None = None) -> None:
        """Switch one perturbation (by name) or all of them on or off at run time."""
        for p in [self.get(name)] if name is not None else self.items:
            p.enabled = bool(on)

    def explain(self) -> list[str]:
        return [f"[{p.name}] {p.explain()}" for p in self.items]
