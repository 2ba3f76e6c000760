"""``perturb.apply(env, spec)``: the batched env seen through a perturbation spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim2real.perturb.adversarial import AttackTarget
from sim2real.perturb.base import Context, layout_from
from sim2real.perturb.dynamics import ScaleShift
from sim2real.perturb.pipeline import Pipeline
from sim2real.perturb.spec import Spec


class PerturbedEnv:
    """A batched multi-agent env (``[E, N, ...]`` arrays) with perturbations between it and the policy.

    ``reset``/``step`` keep the env's signatures. The policy's actions pass the action stages before the
    env executes them; the env's observations pass the observation stages before they are returned (see
    :mod:`sim2real.perturb.pipeline` for the order). ``info`` gains ``clean_obs`` (what the sensors really
    measured) and ``executed_action`` (what the robots really got, clipped to [-1, 1]); ``info["final_obs"]``
    stays clean. Dynamics perturbations rebuild the parameters they touch from the values at wrap time
    every step. Every other attribute is the wrapped env's.

    Args:
        env: a batched env (e.g. ``sim2real.envs.make("drone-hover", num_envs=64)``).
        spec: a perturbation spec (dict, list, YAML path or string form; see :mod:`sim2real.perturb.spec`).
        seed: seeds the perturbations (default: the spec's ``seed``; independent of the env's seed).
        target: what ``adv.*`` attacks and adversarial malicious agents attack; settable later.
        log_capacity: ground-truth rows kept in ``self.log``.
    """

    def __init__(
        self,
        env: Any,
        spec: Spec | dict | list | str | Path | None,
        *,
        seed: int | None = None,
        target: AttackTarget | None = None,
        log_capacity: int = 200_000,
    ) -> None:
        self.env = env
        ctx = Context(
            num_envs=env.num_envs,
            num_agents=env.num_agents,
            obs_layout=layout_from(env.obs_layout),
            act_dim=env.act_dim,
            dt=1.0 / env.ctrl_freq,
            env=env,
            target=target,
        )
        self.pipeline = Pipeline(spec, ctx, seed, log_capacity)
        self._seed = self.pipeline.spec.seed if seed is None else seed
        self.log = self.pipeline.log
        self.global_step = 0
        self._pending_reset = False  # binding already started the first episode
        self._scales = [p for p in self.pipeline.stage("dynamics") if isinstance(p, ScaleShift)]
        self._forces = [p for p in self.pipeline.stage("dynamics") if not isinstance(p, ScaleShift)]
        params = env.sim.params if self.pipeline.stage("dynamics") else None
        touched = {t for p in self._scales for t in p.targets} | ({"ext_force"} if self._forces else set())
        self._nominal = {name: getattr(params, name).copy() for name in touched}
        shape = (env.num_envs, env.num_agents)
        self._action_shape = (*shape, env.act_dim)
        self._clean_obs: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        if "env" not in self.__dict__:  # while unpickling: no wrapped env to forward to yet
            raise AttributeError(name)
        return getattr(self.env, name)

    # ------------------------------------------------------------------ control
    def set_target(self, target: AttackTarget | None) -> None:
        """Set what gradient attacks and adversarial malicious agents attack."""
        self.pipeline.ctx.target = target

    def target_needs(self) -> dict[str, str]:
        """``{perturbation name: AttackTarget field it needs}`` for the perturbations that attack a policy."""
        needs = {}
        for item in self.pipeline.items:
            need = item.requires() if hasattr(item, "requires") else None
            if item.kind == "agents.malicious" and item.p.get("mode") == "adversarial":
                need = "team_critic"
            if need is not None:
                needs[item.name] = need
        return needs

    def set_enabled(self, on: bool, name: str | None = None) -> None:
        """Switch one perturbation (by name) or all of them on or off at run time."""
        self.pipeline.set_enabled(on, name)

    # ------------------------------------------------------------------ env API
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; ``seed`` also reseeds the perturbations (from the wrapper's seed and ``seed``)."""
        obs, info = self.env.reset(seed=seed)
        if seed is not None:
            self.pipeline.seed(seed if self._seed is None else [self._seed, seed])
        elif self._pending_reset:
            self.pipeline.reset(np.arange(self.env.num_envs))
        self._pending_reset = True
        self._clean_obs = obs
        info["clean_obs"] = obs
        return self.pipeline.observations(obs, self.env.steps.copy(), self.global_step), info

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Perturb ``actions [E, N, A]``, step the env, perturb its observations; see the env's ``step``."""
        env = self.env
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != self._action_shape:
            expected = self._action_shape
            raise ValueError(f"actions must have shape {expected} (num_envs, num_agents, act_dim), got {actions.shape}")
        if self._clean_obs is None:
            raise RuntimeError("call reset() before step()")
        episode_step = env.steps.copy()
        actions = self.pipeline.actions(actions, self._clean_obs, episode_step, self.global_step)
        self._apply_dynamics(episode_step)
        obs, reward, terminated, truncated, info = env.step(actions)
        executed = np.clip(actions, -1.0, 1.0)
        self.global_step += 1
        done = np.nonzero(info["done_env"])[0]
        if len(done) and getattr(env, "auto_reset", True):
            self.pipeline.reset(done)
        self._clean_obs = obs
        info["clean_obs"] = obs
        info["executed_action"] = executed
        return self.pipeline.observations(obs, env.steps.copy(), self.global_step), reward, terminated, truncated, info

    def _apply_dynamics(self, episode_step: np.ndarray) -> None:
        if not self._nominal:
            return
        params = self.env.sim.params
        factors: dict[str, np.ndarray] = {}
        for p in self._scales:
            m = p.multiplier(episode_step, self.global_step)
            for name in p.targets:
                nominal = self._nominal[name]
                m_b = m.reshape(m.shape + (1,) * (nominal.ndim - m.ndim))
                factors[name] = factors[name] * m_b if name in factors else m_b
        for name, f in factors.items():
            getattr(params, name)[...] = self._nominal[name] * f
        if self._forces:
            force = self._nominal["ext_force"].copy()
            for p in self._forces:
                force += p.force(episode_step, self.global_step)
            params.ext_force[...] = force

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> PerturbedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply(
    env: Any,
    spec: Spec | dict | list | str | Path | None,
    *,
    seed: int | None = None,
    target: AttackTarget | None = None,
) -> PerturbedEnv:
    """Wrap a batched env with the perturbations of ``spec`` (see :class:`PerturbedEnv`)."""
    return PerturbedEnv(env, spec, seed=seed, target=target)
