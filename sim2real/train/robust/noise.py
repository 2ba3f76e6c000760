"""Gaussian-noise training (the ERNIE paper's Baseline-Gaussian): the actor acts on noisy observations.

Every rollout observation the actor sees is ``o + sigma * obs_std * n`` with ``n ~ N(0, I)``: Gaussian noise of
standard deviation ``sigma`` in normalised observation units (``obs_std`` from the actor's running normaliser),
the same units as the attack budgets. The critic keeps the clean observations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sim2real.train.hooks import TrainingHook

if TYPE_CHECKING:
    from sim2real.train.mappo import MAPPO


class GaussianNoise(TrainingHook):
    """Zero-mean Gaussian observation noise of ``std`` normalised units on every rollout step."""

    name = "gaussian"

    def __init__(self, std: float, seed: int) -> None:
        self.std = std
        self.generator = torch.Generator().manual_seed(seed + 15485863)

    def transform_obs(self, obs: np.ndarray, learner: MAPPO) -> np.ndarray:
        scale = learner.actor.obs_rms.std.numpy() if learner.actor.use_obs_norm else 1.0
        noise = torch.randn(obs.shape, generator=self.generator).numpy()
        return (obs + self.std * scale * noise).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
