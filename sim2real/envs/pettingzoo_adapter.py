"""PettingZoo ``ParallelEnv`` view of one batched multi-agent env (``num_envs == 1``, no auto-reset)."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv


class ParallelSwarmEnv(ParallelEnv):
    """Agents are named ``drone_0 .. drone_{N-1}``; an agent leaves ``agents`` once it is done."""

    metadata: ClassVar[dict] = {"render_modes": [], "name": "sim2real_swarm_v0"}

    def __init__(self, env: Any) -> None:
        if env.num_envs != 1:
            raise ValueError(f"ParallelSwarmEnv needs an env with num_envs == 1, got {env.num_envs}")
        self.env = env
        self.render_mode = None
        self.possible_agents = [f"drone_{i}" for i in range(env.num_agents)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._obs_space = env.single_observation_space
        self._act_space = env.single_action_space
        self.state_space = gym.spaces.Box(-np.inf, np.inf, (env.num_agents * env.obs_dim,), np.float32)

    def observation_space(self, agent: str) -> gym.spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> gym.spaces.Box:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._act_space.seed(seed)
            self._obs_space.seed(seed)
        obs, _ = self.env.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return {a: obs[0, i] for i, a in enumerate(self.agents)}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, np.ndarray]) -> tuple[dict, dict, dict, dict, dict]:
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions missing for live agents {missing}")
        batch = np.zeros((1, self.env.num_agents, self.env.act_dim), dtype=np.float32)
        for agent in self.agents:
            batch[0, self._index[agent]] = actions[agent]
        obs, rew, term, trunc, info = self.env.step(batch)
        live = list(self.agents)
        out = (
            {a: obs[0, self._index[a]] for a in live},
            {a: float(rew[0, self._index[a]]) for a in live},
            {a: bool(term[0, self._index[a]]) for a in live},
            {a: bool(trunc[0, self._index[a]]) for a in live},
            {a: {"pos_error": float(info["pos_error"][0, self._index[a]])} for a in live},
        )
        self.agents = [a for a in live if not (out[2][a] or out[3][a])]
        return out

    def state(self) -> np.ndarray:
        """Global state: every agent's observation, concatenated."""
        return self.env.observe()[0].reshape(-1)

    def close(self) -> None:
        self.env.close()
