"""Gradient attacks on observations (``adv.fgsm``, ``adv.pgd``) and the hook for learned adversaries (``adv.learned``).

**Budget convention.** ``eps`` is measured in *normalised observation units*: the attack chooses
``delta`` with ``||delta|| <= eps`` (l-inf or l2 over the hit columns of one agent's observation) and the
policy sees ``o + delta * obs_std``, where ``obs_std [D]`` is the standard deviation of the policy's running
observation normaliser (the one exported with it). Without a normaliser ``obs_std`` is 1 and the budget is in
raw units. Columns outside ``fields`` are never changed.

**Objectives.** ``divergence`` maximises ``D(pi(o + delta), pi(o))``: the KL divergence summed over action
dimensions when the policy returns a ``torch.distributions.Distribution``, the squared L2 distance when it
returns actions (a deterministic policy). ``critic`` minimises ``Q(o, mu(o + delta))`` with the target's
``action_critic`` (``mu`` is the distribution mean for stochastic policies).

**PGD** (Madry et al.; research/robust-marl.md 2.5): random start uniform in the ball (optional; without
it the divergence objective starts at the same tiny random point as FGSM below), then ``steps``
iterations of ``delta += step_size * sign(g)`` (l-inf) or ``step_size * g / ||g||_2`` (l2), each followed by
the projection back onto the ball. Default ``step_size = 2.5 eps / steps`` (``eps / 4`` at 10 steps).
**FGSM** is one step of size ``eps`` from ``delta = 0``; for the divergence objective the gradient at 0 is
exactly zero (the divergence has its minimum there), so the gradient is taken at a tiny random point
``N(0, (1e-3 eps)^2)`` instead, as the ERNIE release does.

Attacks run in torch, batched over every env and agent at once; the policy's parameters get no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim2real.perturb.base import Perturbation, change_norm
from sim2real.perturb.spec import REQUIRED, Param
from sim2real.perturb.values import FIELDS


class LearnedAdversary(Protocol):
    """A learned observation adversary (ATLA / PA-AD style; trained in a later issue).

    ``act(obs [E, N, D]) -> [E, N, D]`` returns a direction in [-1, 1]; ``adv.learned`` scales it by ``eps``
    (normalised units), projects it onto the ball and adds it to the hit columns.
    """

    def act(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass
class AttackTarget:
    """What gradient attacks and adversarial malicious agents attack.

    Attributes:
        policy: torch callable, raw observations ``[..., D]`` float32 -> a ``Distribution`` (stochastic
            actor) or actions ``[..., A]`` (deterministic actor). Any leading shape (``[E, N]`` here).
        obs_std: ``[D]`` standard deviation of the policy's observation normaliser (budget units); None = 1.
        action_critic: torch callable ``(obs [..., D], action [..., A]) -> [...]`` for ``objective=critic``.
        team_critic: numpy callable ``(obs [B, N, D], actions [B, N, A]) -> [B]``, the centralised Q that
            ``agents.malicious(mode=adversarial)`` lowers.
        adversary: a :class:`LearnedAdversary` for ``adv.learned``.
    """

    policy: Callable[[Any], Any] | None = None
    obs_std: np.ndarray | None = None
    action_critic: Callable[[Any, Any], Any] | None = None
    team_critic: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    adversary: LearnedAdversary | None = None


def project(delta, eps, norm: str):
    """Project ``delta [..., D]`` (torch) onto the l-inf or l2 ball of radius ``eps [..., 1]``."""
    import torch

    if norm == "linf":
        return torch.maximum(torch.minimum(delta, eps), -eps)
    length = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(eps / length.clamp_min(1e-12), max=1.0)


def ascent_step(delta, g, eta, eps, norm: str):
    """One projected ascent step on ``delta [..., D]`` (torch): ``Proj(delta + eta * sign(g))`` for l-inf,
    ``Proj(delta + eta * g / ||g||_2)`` for l2; ``eta`` and ``eps`` broadcast as ``[..., 1]``. Differentiable
    (through ``g``) for l2."""
    import torch

    if norm == "linf":
        step = torch.sign(g)
    else:
        step = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return project(delta + eta * step, eps, norm)


def random_in_ball(shape: tuple[int, ...], eps, norm: str, mask, generator):
    """Uniform sample in the l-inf or l2 ball (over the ``mask`` columns) of radius ``eps [..., 1]``."""
    import torch

    if norm == "linf":
        return (torch.rand(shape, generator=generator) * 2 - 1) * eps * mask
    g = torch.randn(shape, generator=generator) * mask
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dim = mask.sum().clamp_min(1)
    radius = torch.rand((*shape[:-1], 1), generator=generator) ** (1.0 / dim)
    return g * radius * eps


def divergence(perturbed: Any, clean: Any):
    """Per-sample ``D(perturbed, clean)``: KL summed over action dims, or squared L2 for action tensors."""
    import torch

    if isinstance(perturbed, torch.Tensor):
        return ((perturbed - clean) ** 2).sum(-1)
    kl = torch.distributions.kl_divergence(perturbed, clean)
    return kl.sum(-1) if isinstance(perturbed, torch.distributions.Normal) else kl


def _mean_action(out: Any):
    import torch

    return out if isinstance(out, torch.Tensor) else out.mean


def gradient_attack(
    target: AttackTarget,
    obs: np.ndarray,
    eps: np.ndarray,
    *,
    norm: str,
    steps: int,
    step_size: np.ndarray,
    random_start: bool,
    objective: str,
    cols: np.ndarray,
    generator,
    fgsm: bool = False,
) -> np.ndarray:
    """The attacked observations ``[..., D]`` (float32) for clean ``obs [..., D]`` and budgets ``eps [...]``."""
    import torch

    o = torch.as_tensor(obs, dtype=torch.float32)
    std = torch.ones(o.shape[-1]) if target.obs_std is None else torch.as_tensor(target.obs_std, dtype=torch.float32)
    mask = torch.as_tensor(cols, dtype=torch.float32)
    scale = std * mask
    e = torch.tensor(np.asarray(eps), dtype=torch.float32)[..., None]
    eta = torch.tensor(np.asarray(step_size), dtype=torch.float32)[..., None]
    with torch.no_grad():
        clean = target.policy(o)
        clean = clean if isinstance(clean, torch.Tensor) else detach_distribution(clean)

    def loss_fn(delta):
        out = target.policy(o + delta * scale)
        if objective == "divergence":
            return divergence(out, clean)
        return -target.action_critic(o, _mean_action(out))

    if fgsm:
        delta = _tiny_start(o, e, mask, objective, generator).requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(delta).sum(), delta)
        g = g * mask
        step = e * torch.sign(g) if norm == "linf" else e * g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        delta = project(step, e, norm)
    else:
        if random_start:
            delta = random_in_ball(tuple(o.shape), e, norm, mask, generator)
        else:  # the divergence has zero gradient at 0: start a hair away from it, as FGSM does
            delta = _tiny_start(o, e, mask, objective, generator)
        for _ in range(steps):
            delta = delta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(loss_fn(delta).sum(), delta)
            delta = ascent_step(delta, g * mask, eta, e, norm)
    return (o + delta.detach() * scale).numpy()


def _tiny_start(o, eps, mask, objective: str, generator):
    """Zero for the critic objective; ``N(0, (1e-3 eps)^2)`` for the divergence, whose gradient vanishes at 0."""
    import torch

    if objective != "divergence":
        return torch.zeros_like(o)
    return torch.randn(o.shape, generator=generator) * 1e-3 * eps * mask


def detach_distribution(dist: Any) -> Any:
    """A copy of a torch distribution built from detached parameters (Normal, Independent(Normal), Categorical)."""
    import torch

    d = torch.distributions
    if isinstance(dist, d.Independent):
        return d.Independent(detach_distribution(dist.base_dist), dist.reinterpreted_batch_ndims)
    if isinstance(dist, d.Normal):
        return d.Normal(dist.loc.detach(), dist.scale.detach())
    if isinstance(dist, d.Categorical):
        return d.Categorical(logits=dist.logits.detach())
    raise TypeError(
        f"cannot attack a policy returning {type(dist).__name__}; return Normal, Independent or Categorical"
    )


NORM = Param(
    "choice", "linf", "Threat ball: l-inf box or l2 ball, in normalised observation units.", choices=("linf", "l2")
)
EPS = Param("float", REQUIRED, "Budget in normalised observation units (see the module doc).", low=0.0, strength=True)
OBJECTIVE = Param(
    "choice",
    "divergence",
    "Maximise the policy's output divergence, or minimise the action critic.",
    choices=("divergence", "critic"),
)


class ObservationAttack(Perturbation):
    """Base of the ``adv.*`` kinds: needs an :class:`AttackTarget`, set with ``set_target``."""

    channel = "attack"

    def setup(self) -> None:
        import torch

        self.cols = self.ctx.field_mask(self.p.get("fields"), self.where)
        self.generator = torch.Generator().manual_seed(int(self.rng.integers(2**62)))

    def check_target(self) -> AttackTarget:
        target = self.ctx.target
        need = self.requires()
        if target is None or getattr(target, need) is None:
            raise RuntimeError(
                f"{self.name}: this attack needs an AttackTarget with `{need}`; pass target=AttackTarget(...) "
                "to perturb.apply or call set_target"
            )
        return target

    def requires(self) -> str:
        return "action_critic" if self.p.get("objective") == "critic" else "policy"

    def apply(self, x: np.ndarray, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        hit, strength = self.gate(episode_step, global_step)
        if not hit.any():
            return x
        target = self.check_target()
        eps = np.broadcast_to((self.p["eps"] * strength)[:, None], hit.shape)
        attacked = self.attack(target, x, eps)
        out = np.where(hit[..., None], attacked, x).astype(np.float32)
        self.record(hit, change_norm(x, out), episode_step, global_step)
        return out


class FGSM(ObservationAttack):
    kind = "adv.fgsm"
    summary = "one-step gradient attack (fast gradient sign method) on the hit agents' observations."
    params = {"eps": EPS, "norm": NORM, "objective": OBJECTIVE, "fields": FIELDS}

    def attack(self, target, x, eps):
        return gradient_attack(
            target,
            x,
            eps,
            norm=self.p["norm"],
            steps=1,
            step_size=eps,
            random_start=False,
            objective=self.p["objective"],
            cols=self.cols,
            generator=self.generator,
            fgsm=True,
        )


class PGD(ObservationAttack):
    kind = "adv.pgd"
    summary = "K-step projected gradient attack on the hit agents' observations."
    params = {
        "eps": EPS,
        "steps": Param("int", 10, "Number of ascent steps K.", low=1),
        "step_size": Param("float", None, "Step size in normalised units; none = 2.5 eps / steps.", low=0.0),
        "norm": NORM,
        "random_start": Param("bool", True, "Start from a uniform random point in the ball."),
        "objective": OBJECTIVE,
        "fields": FIELDS,
    }

    def attack(self, target, x, eps):
        steps = self.p["steps"]
        step_size = eps * (2.5 / steps) if self.p["step_size"] is None else np.full(eps.shape, self.p["step_size"])
        return gradient_attack(
            target,
            x,
            eps,
            norm=self.p["norm"],
            steps=steps,
            step_size=step_size,
            random_start=self.p["random_start"],
            objective=self.p["objective"],
            cols=self.cols,
            generator=self.generator,
        )


class Learned(ObservationAttack):
    kind = "adv.learned"
    summary = "adds a learned adversary's perturbation (scaled to the budget) to the hit agents' observations."
    params = {"eps": EPS, "norm": NORM, "fields": FIELDS}

    def requires(self) -> str:
        return "adversary"

    def attack(self, target, x, eps):
        import torch

        direction = np.clip(np.asarray(target.adversary.act(x), dtype=np.float32), -1.0, 1.0) * self.cols
        e = torch.tensor(np.asarray(eps), dtype=torch.float32)[..., None]
        delta = project(torch.as_tensor(direction) * e, e, self.p["norm"]).numpy()
        std = np.ones(x.shape[-1], np.float32) if target.obs_std is None else np.asarray(target.obs_std, np.float32)
        return x + delta * std


ATTACK_KINDS = (FGSM, PGD, Learned)
