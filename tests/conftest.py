"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from sim2real.envs import env_names, register
from sim2real.envs.drones import CF2X
from sim2real.envs.registry import EnvSpec

HOVER = CF2X.hover_rpm
BACKENDS = ("pybullet", "batched")


def may_go_realtime(priority: int) -> bool:
    """Whether a process here may take ``SCHED_FIFO`` ``priority`` (root, CAP_SYS_NICE or an rtprio limit)."""
    probe = f"import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param({priority}))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def constant_rpm(steps: int, num_drones: int = 1, scale: float | np.ndarray = 1.0) -> np.ndarray:
    """``[steps, num_drones, 4]`` RPM schedule at ``scale`` times hover."""
    return np.broadcast_to(HOVER * np.asarray(scale, dtype=np.float64), (steps, num_drones, 4)).copy()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Both physics backends."""
    return request.param


class MatchCueEnv:
    """Toy discrete env with a global state: each agent is rewarded for naming its own cue (one of 3).

    Episodes last 8 steps (time limit, so the runner bootstraps from ``final_obs``/``final_state``).
    """

    def __init__(
        self, num_envs: int = 1, num_drones: int = 2, seed: int | None = None, backend: str = "batched"
    ) -> None:
        self.num_envs, self.num_agents, self.obs_dim, self.state_dim, self.max_steps = num_envs, num_drones, 3, 6, 8
        self.single_action_space = gym.spaces.Discrete(3)
        self.rng = np.random.default_rng(seed)
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.ret = np.zeros((num_envs, num_drones))

    def _draw(self, ids: np.ndarray) -> None:
        self.cue[ids] = self.rng.integers(0, 3, (len(ids), self.num_agents))

    def _obs(self) -> np.ndarray:
        return np.eye(3, dtype=np.float32)[self.cue]

    def global_state(self) -> np.ndarray:
        return np.concatenate([self._obs().reshape(self.num_envs, -1)[:, :3], np.ones((self.num_envs, 3))], -1)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.cue = np.zeros((self.num_envs, self.num_agents), dtype=np.int64)
        self._draw(np.arange(self.num_envs))
        return self._obs(), {}

    def step(self, actions: np.ndarray):
        reward = (actions == self.cue).astype(np.float32)
        self.ret += reward
        self.steps += 1
        done = self.steps >= self.max_steps
        truncated = np.repeat(done[:, None], self.num_agents, 1)
        active = np.ones_like(truncated)
        info = {"active": active, "done_env": done}
        self._draw(np.arange(self.num_envs))
        obs = self._obs()
        if done.any():
            info.update(
                final_obs=obs.copy(),
                final_state=self.global_state(),
                episode_return=self.ret.copy(),
                episode_length=self.steps.copy(),
            )
            self.steps[done] = 0
            self.ret[done] = 0
        return obs, reward, np.zeros_like(truncated), truncated, info

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def match_cue() -> str:
    if "toy-match-cue" not in env_names():
        register(EnvSpec("toy-match-cue", MatchCueEnv, "toy discrete env for the learner tests"))
    return "toy-match-cue"


def export_tiny_drone_bundle(directory: Path, **env: object) -> Path:
    """Train a drone policy for 2 small updates and export it as a verified bundle ``directory/bundle``.

    The policy is barely trained (a few seconds on 2 cores): good for plumbing tests, not for flying.
    ``env`` holds the run's ``env`` section (``num_drones``, ``action_type``, ``name``...).
    """
    from sim2real.config import validate
    from sim2real.export.exporter import export_run
    from sim2real.train import Trainer

    config = validate(
        {
            "name": "tiny",
            "env": {"num_envs": 16, **env},
            "train": {"total_steps": 16 * 8 * 2, "rollout_steps": 8},
            "policy": {"hidden": [16, 16]},
            "eval_episodes": 0,
        }
    )
    Trainer.create(config, directory / "run", progress=False).train()
    export_run(directory / "run", directory / "bundle")
    return directory / "bundle"


@pytest.fixture(scope="module")
def vel_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of a barely trained 2-drone hover policy with velocity actions (30 Hz, one neighbour)."""
    return export_tiny_drone_bundle(tmp_path_factory.mktemp("vel"), num_drones=2)
