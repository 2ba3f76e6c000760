"""Domain randomisation: the training env's dynamics are drawn anew every episode from a perturbation spec.

The spec is any perturbation-library spec (``robust.dr.spec``); the default draws, per episode and drone, the
mass (x0.7..1.3), the motors' thrust coefficient (x0.8..1.05) and applies a 0.5 m/s wind with gusts in half of
the episodes. Scale ranges ``[low, high]`` are drawn uniformly per episode and drone (docs/perturbations.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim2real import perturb
from sim2real.train.hooks import TrainingHook

if TYPE_CHECKING:
    from sim2real.train.mappo import MAPPO

DEFAULT_DR_SPEC: list[dict[str, Any]] = [
    {"kind": "dynamics.mass", "scale": [0.7, 1.3]},
    {"kind": "dynamics.thrust", "scale": [0.8, 1.05]},
    {"kind": "dynamics.wind", "speed": 0.5, "gust_std": 0.2, "prob": 0.5},
]


class DomainRandomization(TrainingHook):
    """Wraps the training env with the randomisation spec (seeded with the run's seed)."""

    name = "dr"

    def __init__(self, spec: Any) -> None:
        self.spec = DEFAULT_DR_SPEC if spec is None else spec

    def wrap_env(self, env: Any, learner: MAPPO, seed: int) -> Any:
        return perturb.apply(env, self.spec, seed=seed + 1)
