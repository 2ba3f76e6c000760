"""Adversarial training: the actor acts on, and is trained on, FGSM/PGD-attacked observations.

On each rollout step a fraction of the envs is attacked (drawn per env and step with probability
``fraction``): every agent's observation there is replaced by ``o + delta * obs_std`` with ``delta`` from
:func:`sim2real.perturb.gradient_attack` against the current actor (divergence objective
``KL(pi(o + delta) || pi(o))``, budget ``eps`` in normalised units). The PPO update then fits the actions taken
on the attacked observations (the rollout's ``obs``), while the critic keeps the clean observations. This is
the observation-adversarial training of Guo et al. 2023 (FGSM adversarial training, research/robust-marl.md
section 3.1) and of Pattanaik et al. 2018, on MAPPO; PGD is Madry et al.'s K-step attack (section 2.5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sim2real.perturb.adversarial import gradient_attack
from sim2real.train.hooks import TrainingHook

if TYPE_CHECKING:
    from sim2real.config import AdversarialConfig
    from sim2real.train.mappo import MAPPO


class AdversarialTraining(TrainingHook):
    """Rollouts on FGSM/PGD-attacked observations for a ``fraction`` of env steps.

    Args:
        config: the ``robust.adv`` section (``attack``, ``eps``, ``steps``, ``norm``, ``fraction``).
        seed: seed of the attacked-step draws and the random starts.
    """

    name = "adv-pgd"

    def __init__(self, config: AdversarialConfig, seed: int) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(seed + 104729)
        self.attacked = 0
        self.total = 0

    def transform_obs(self, obs: np.ndarray, learner: MAPPO) -> np.ndarray:
        cfg = self.config
        hit = torch.rand(obs.shape[0], generator=self.generator) < cfg.fraction
        self.total += obs.shape[0]
        if not bool(hit.any()):
            return obs
        rows = hit.numpy()
        target = learner.attack_target()
        eps = np.full(obs[rows].shape[:-1], cfg.eps, dtype=np.float32)
        attacked = gradient_attack(
            target,
            obs[rows],
            eps,
            norm=cfg.norm,
            steps=1 if cfg.attack == "fgsm" else cfg.steps,
            step_size=eps if cfg.attack == "fgsm" else eps * (2.5 / cfg.steps),
            random_start=True,
            objective="divergence",
            cols=np.ones(obs.shape[-1], dtype=bool),
            generator=self.generator,
            fgsm=cfg.attack == "fgsm",
        )
        out = obs.copy()
        out[rows] = attacked
        self.attacked += int(rows.sum())
        return out

    def after_update(self, learner: MAPPO, stats: dict[str, float]) -> None:
        stats["adv_attacked_fraction"] = self.attacked / max(self.total, 1)
        self.attacked = self.total = 0

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
