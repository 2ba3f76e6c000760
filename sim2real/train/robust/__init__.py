"""Robust-training methods: plug-ins (:class:`~sim2real.train.hooks.TrainingHook`) on the MAPPO/IPPO learner.

``robust.method`` in the run config (``sim2real train --robust METHOD``) selects one:

- ``ernie``: adversarial regulariser of the policy's local smoothness, delta detached (ERNIE, Eq. 2-3);
- ``ernie-st``: the same with the Stackelberg gradient through the unrolled attack (ERNIE, Eq. 4);
- ``adv-pgd``: rollouts on FGSM/PGD-attacked observations (adversarial training);
- ``gaussian``: rollouts on Gaussian-noised observations (Baseline-Gaussian);
- ``dr``: domain randomisation of the dynamics from a perturbation spec.
"""

from __future__ import annotations

from sim2real.config import RunConfig
from sim2real.train.hooks import TrainingHook
from sim2real.train.robust.adversarial import AdversarialTraining
from sim2real.train.robust.ernie import Ernie, adversarial_divergence
from sim2real.train.robust.noise import GaussianNoise
from sim2real.train.robust.randomization import DEFAULT_DR_SPEC, DomainRandomization

METHODS = ("none", "gaussian", "dr", "adv-pgd", "ernie", "ernie-st")  # the values of ``robust.method``


def make_hooks(config: RunConfig) -> list[TrainingHook]:
    """The hooks of the run's ``robust.method`` (empty for ``none``)."""
    robust, seed = config.robust, config.seed
    method = robust.method
    if method in ("ernie", "ernie-st"):
        return [Ernie(robust.ernie, stackelberg=method == "ernie-st", seed=seed)]
    if method == "adv-pgd":
        return [AdversarialTraining(robust.adv, seed)]
    if method == "gaussian":
        return [GaussianNoise(robust.gaussian.std, seed)]
    if method == "dr":
        return [DomainRandomization(robust.dr.spec)]
    return []


__all__ = [
    "DEFAULT_DR_SPEC",
    "METHODS",
    "AdversarialTraining",
    "DomainRandomization",
    "Ernie",
    "GaussianNoise",
    "adversarial_divergence",
    "make_hooks",
]
