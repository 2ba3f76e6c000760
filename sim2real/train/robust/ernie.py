"""ERNIE (Bukharin et al., NeurIPS 2023): adversarial regularisation of the policy's local Lipschitz constant.

**ERNIE** (paper Eq. 2 and 3). For each observation ``o`` of the minibatch

    R(o) = max_{||delta|| <= eps} D(pi(o + delta), pi(o))                                    (Eq. 2)

is approximated by ``K`` steps of projected gradient ascent from a uniform random start in the ball
(Madry et al.; ``delta <- Proj(delta + eta * g / ||g||_2)``, or ``eta * sign(g)`` for the l-inf ball), and
``lambda * mean R`` is added to the actor's loss (Eq. 3, minimised jointly with the PPO loss). ``D`` is
``KL(pi(o + delta) || pi(o))`` summed over action dimensions for the Gaussian actor (categorical KL for discrete
actions). ``delta`` and ``o`` are in *normalised observation units* (the actor's running normaliser), so
``eps`` means the same for every field. The found ``delta`` is detached: the paper's "ERNIE w/o ST"; the
parameters get gradient through both ``pi(o + delta)`` and ``pi(o)``.

**ERNIE-ST** (Eq. 4, the Stackelberg form). The ascent steps ``delta^{k+1} = U_theta(delta^k)`` are unrolled
with ``create_graph`` and ``delta^K(theta)`` is *not* detached, so the actor's gradient has the leader term and
the leader-follower term ``dR/d delta^K * d delta^K / d theta`` (exact, by double backward, instead of the
paper's finite-difference Hessian-vector product; same gradient up to the finite-difference error).

Deliberate deviations, all recorded in docs/robustness.md:

- the ascent step is normalised (``g / ||g||_2``) and projected onto the ball after every step, as the issue
  and the PGD literature define it; the paper's ``U_theta`` is a raw gradient step, which at a random start
  near ``o`` is tiny because ``D`` is flat there;
- ``lambda`` multiplies the batch mean of ``R`` over live agents (Eq. 3 sums the per-agent expectations over
  the ``N`` agents: ``lambda_paper = lambda / N``), so ``lambda`` does not change with the swarm size;
- the released code's ``|o|``-relative step, batch Frobenius norm and swapped ST branches
  (research/robust-marl.md, section 2) are not reproduced: we follow the paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from sim2real.perturb.adversarial import ascent_step, detach_distribution, divergence, random_in_ball
from sim2real.train.hooks import TrainingHook

if TYPE_CHECKING:
    from sim2real.config import ErnieConfig
    from sim2real.train.buffer import MiniBatch
    from sim2real.train.mappo import MAPPO
    from sim2real.train.networks import Actor


def adversarial_divergence(
    actor: Actor,
    x: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float | None = None,
    norm: str = "l2",
    stackelberg: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``R(o)`` of Eq. 2 (or Eq. 4 with ``stackelberg``) per agent and the perturbation found.

    Args:
        actor: the shared actor.
        x: observations ``[B, N, D]`` in normalised units (``actor.normalize(obs)``).
        eps: radius of the l2 (or l-inf) ball, normalised units.
        steps: ascent steps K (>= 1).
        step_size: eta; default ``2.5 * eps / steps``.
        norm: ``l2`` or ``linf`` (ERNIE-ST needs ``l2``: a sign step has no gradient with respect to theta).
        stackelberg: keep ``delta^K(theta)`` in the graph (ERNIE-ST) instead of detaching it (ERNIE).
        generator: torch generator of the random start.

    Returns:
        ``R [B, N]`` (differentiable in the actor's parameters) and ``delta [B, N, D]`` (detached).
    """
    if stackelberg and norm != "l2":
        raise ValueError("ERNIE-ST needs norm l2: the sign step of the l-inf ball has no gradient in theta")
    eta = 2.5 * eps / steps if step_size is None else step_size
    e = torch.full((*x.shape[:-1], 1), float(eps))
    clean = actor.dist_normalized(x)
    clean_fixed = detach_distribution(clean)
    delta = random_in_ball(tuple(x.shape), e, norm, torch.ones(x.shape[-1]), generator).requires_grad_(True)
    for _ in range(steps):
        if not stackelberg:
            delta = delta.detach().requires_grad_(True)
        inner = divergence(actor.dist_normalized(x + delta), clean if stackelberg else clean_fixed)
        (g,) = torch.autograd.grad(inner.sum(), delta, create_graph=stackelberg)
        delta = ascent_step(delta, g, eta, e, norm)
    if not stackelberg:
        delta = delta.detach()
    return divergence(actor.dist_normalized(x + delta), clean), delta.detach()


class Ernie(TrainingHook):
    """ERNIE / ERNIE-ST: ``lambda * mean R(o)`` added to the actor loss on every minibatch (Eq. 3 / Eq. 4).

    Args:
        config: the ``robust.ernie`` section (``lam``, ``eps``, ``steps``, ``step_size``, ``norm``,
            ``samples``).
        stackelberg: ERNIE-ST (Eq. 4) when True.
        seed: seed of the random starts.
    """

    def __init__(self, config: ErnieConfig, *, stackelberg: bool, seed: int) -> None:
        self.config = config
        self.stackelberg = stackelberg
        self.name = "ernie-st" if stackelberg else "ernie"
        self.generator = torch.Generator().manual_seed(seed + 7919)
        self.sums: dict[str, float] = {}
        self.batches = 0

    def actor_loss(self, batch: MiniBatch, learner: MAPPO) -> torch.Tensor:
        cfg = self.config
        obs, mask = batch.obs, batch.mask
        if cfg.samples is not None and obs.shape[0] > cfg.samples:  # regularise a random subset of rows
            rows = torch.randperm(obs.shape[0], generator=self.generator)[: cfg.samples]
            obs, mask = obs[rows], mask[rows]
        x = learner.actor.normalize(obs)
        reg, delta = adversarial_divergence(
            learner.actor,
            x,
            eps=cfg.eps,
            steps=cfg.steps,
            step_size=cfg.step_size,
            norm=cfg.norm,
            stackelberg=self.stackelberg,
            generator=self.generator,
        )
        live = mask.sum().clamp(min=1.0)
        value = (reg * mask).sum() / live
        self.sums["ernie_reg"] = self.sums.get("ernie_reg", 0.0) + float(value.detach())
        size = delta.abs().amax(dim=-1) if cfg.norm == "linf" else delta.norm(dim=-1)  # in the ball's own norm
        self.sums["ernie_delta_norm"] = self.sums.get("ernie_delta_norm", 0.0) + float((size * mask).sum() / live)
        self.batches += 1
        return cfg.lam * value

    def after_update(self, learner: MAPPO, stats: dict[str, float]) -> None:
        for key, total in self.sums.items():
            stats[key] = total / max(self.batches, 1)
        self.sums, self.batches = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
