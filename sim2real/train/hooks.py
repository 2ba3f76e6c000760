"""Extension points of the on-policy learners: how robust-training methods plug in.

A method subclasses :class:`TrainingHook` and overrides what it needs; the runner and the learner call every
hook of a run at fixed places:

- :meth:`TrainingHook.wrap_env` once, when the training env is built (an adversary or perturbation acting in
  the env);
- :meth:`TrainingHook.transform_obs` on each rollout step, before the actor acts (what the actor sees and is
  trained on; the critic keeps the clean observation);
- :meth:`TrainingHook.actor_loss` and :meth:`TrainingHook.critic_loss` on each minibatch, added to the PPO
  losses (regularisers);
- :meth:`TrainingHook.after_update` after each update.

Hook state goes into checkpoints through ``state_dict``/``load_state_dict``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from sim2real.train.buffer import MiniBatch
    from sim2real.train.mappo import MAPPO


class TrainingHook:
    """No-op base: every method returns its input unchanged or adds nothing."""

    name = "hook"

    def wrap_env(self, env: Any, learner: MAPPO, seed: int) -> Any:
        """The env the rollouts use (default: ``env`` itself)."""
        return env

    def transform_obs(self, obs: np.ndarray, learner: MAPPO) -> np.ndarray:
        """Observations ``[E, N, D]`` the actor acts on during rollouts (default: unchanged)."""
        return obs

    def actor_loss(self, batch: MiniBatch, learner: MAPPO) -> torch.Tensor | None:
        """An extra scalar added to the actor's loss, or None."""
        return None

    def critic_loss(self, batch: MiniBatch, learner: MAPPO) -> torch.Tensor | None:
        """An extra scalar added to the critic's loss, or None."""
        return None

    def after_update(self, learner: MAPPO, stats: dict[str, float]) -> None:
        """Called after each update with the update's statistics (add entries to log them)."""

    def state_dict(self) -> dict[str, Any]:
        """State saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
