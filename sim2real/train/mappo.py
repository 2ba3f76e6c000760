"""MAPPO (Yu et al. 2022) and IPPO in plain torch: the shared actor, the critic and the PPO update.

Read top to bottom:

1. **Networks.** One actor shared by all agents (optional one-hot agent id), owning the running observation
   normaliser; one critic giving each agent a value. MAPPO's critic sees every agent's observation (or the
   env's global state); IPPO's (``algo: ippo``) sees the agent's own observation only.
2. **Acting** (:meth:`MAPPO.act`): a sample from the Gaussian (Box) or categorical (Discrete) head.
3. **Update** (:meth:`MAPPO.update`), on a :class:`~sim2real.train.buffer.RolloutBuffer` with advantages:
   - value targets are normalised by a running mean/std of the returns (value normalisation, MAPPO sec. 4.1);
   - advantages are normalised over the live agents of the whole batch;
   - actor: the clipped surrogate ``-min(r A, clip(r, 1-eps, 1+eps) A)`` minus the entropy bonus, plus
     every hook's ``actor_loss``;
   - critic: the clipped value loss ``max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) / 2``, plus
     every hook's ``critic_loss``; actor and critic have separate Adam optimisers and gradient clipping;
   - inactive (crashed) agents are masked out of every mean;
   - the learning rate and the entropy coefficient follow their schedules over training progress;
   - after the update the observation normaliser absorbs the rollout, so acting and updating within an
     iteration always use the same statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from sim2real.config import RunConfig
from sim2real.perturb.adversarial import AttackTarget
from sim2real.train.buffer import RolloutBuffer
from sim2real.train.hooks import TrainingHook
from sim2real.train.networks import Actor, Critic
from sim2real.train.normalize import RunningMeanStd


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class MAPPO:
    """The learner: networks, optimisers, normalisers and the PPO update.

    Args:
        obs_dim: per-agent observation size.
        num_agents: agents per env.
        action_space: one agent's action space (1-D ``Box`` or ``Discrete``).
        config: the run config (``policy``, ``train`` and ``algo`` are used).
        state_dim: size of the env's global state when the critic should use it instead of the joint
            observation (MAPPO only).
        hooks: robust-training plug-ins (:mod:`sim2real.train.hooks`).
    """

    def __init__(
        self,
        obs_dim: int,
        num_agents: int,
        action_space: gym.Space,
        config: RunConfig,
        *,
        state_dim: int | None = None,
        hooks: list[TrainingHook] | None = None,
    ) -> None:
        p, tr = config.policy, config.train
        self.config = config
        self.num_agents = num_agents
        centralized = config.algo == "mappo"
        self.actor = Actor(
            obs_dim,
            num_agents,
            action_space,
            p.hidden,
            p.activation,
            agent_id=p.agent_id,
            init_log_std=p.init_log_std,
            obs_norm=p.obs_norm,
        )
        self.state_rms = RunningMeanStd((state_dim,)) if (state_dim and centralized) else None
        self.critic = Critic(
            obs_dim,
            num_agents,
            p.hidden,
            p.activation,
            centralized=centralized,
            agent_id=p.agent_id,
            state_dim=state_dim if centralized else None,
        )
        self.value_rms = RunningMeanStd((), clip=None)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=tr.lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=tr.critic_lr or tr.lr, eps=1e-5)
        self.hooks = list(hooks or [])
        self.act_shape: tuple[int, ...] = () if self.actor.discrete else (action_space.shape[0],)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled actions and their log-probabilities ``[E, N]`` for raw observations ``[E, N, D]``."""
        dist = self.actor(obs)
        action = dist.sample()
        return action, self.log_prob(dist, action)

    def log_prob(self, dist: torch.distributions.Distribution, action: torch.Tensor) -> torch.Tensor:
        """Joint log-probability per agent ``[..., N]`` (summed over Gaussian action dimensions)."""
        logp = dist.log_prob(action)
        return logp if self.actor.discrete else logp.sum(-1)

    def entropy(self, dist: torch.distributions.Distribution) -> torch.Tensor:
        """Entropy per agent ``[..., N]``."""
        ent = dist.entropy()
        return ent if self.actor.discrete else ent.sum(-1)

    def critic_input(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Critic input ``[..., N, C]`` for raw observations ``[..., N, D]`` and the env's state ``[..., S]``."""
        norm_state = None
        if self.state_rms is not None and state is not None:
            norm_state = self.state_rms.normalize(state)
        return self.critic.inputs(self.actor.normalize(obs), norm_state)

    @torch.no_grad()
    def values(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Values in raw return units ``[..., N]`` for raw observations ``[..., N, D]`` (and states ``[..., S]``)."""
        v = self.critic(self.critic_input(obs, state))
        return self.value_rms.denormalize(v) if self.config.policy.value_norm else v

    def policy(self, deterministic: bool = True) -> Callable[[np.ndarray], np.ndarray]:
        """A numpy policy ``obs [E, N, D] -> actions`` for evaluation (deterministic by default)."""

        @torch.no_grad()
        def act(obs: np.ndarray) -> np.ndarray:
            o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
            a = self.actor.deterministic(o) if deterministic else self.actor(o).sample()
            return a.numpy()

        return act

    def attack_target(self) -> AttackTarget:
        """What ``adv.*`` perturbations attack: the actor, with budgets in its normalised units."""
        std = self.actor.obs_rms.std.numpy().copy() if self.actor.use_obs_norm else None
        return AttackTarget(policy=self.actor, obs_std=std)

    # ------------------------------------------------------------------ update
    def schedule(self, progress: float) -> tuple[float, float, float]:
        """Actor learning rate, critic learning rate and entropy coefficient at training ``progress`` in [0, 1]."""
        tr = self.config.train
        frac = 1.0 - progress if tr.lr_schedule == "linear" else 1.0
        end = tr.ent_coef if tr.ent_coef_end is None else tr.ent_coef_end
        ent = tr.ent_coef + (end - tr.ent_coef) * progress
        return tr.lr * frac, (tr.critic_lr or tr.lr) * frac, ent

    def update(self, buf: RolloutBuffer, progress: float, generator: torch.Generator) -> dict[str, float]:
        """One PPO update on ``buf`` (advantages and returns computed); returns statistics."""
        tr, use_vn = self.config.train, self.config.policy.value_norm
        lr_actor, lr_critic, ent_coef = self.schedule(progress)
        for group in self.actor_opt.param_groups:
            group["lr"] = lr_actor
        for group in self.critic_opt.param_groups:
            group["lr"] = lr_critic
        live = buf.mask > 0
        # the rollout's critic outputs, in the units the critic predicts (normalised with the statistics
        # the values were made with, i.e. before this update's statistics change)
        buf.value_preds = self.value_rms.normalize(buf.values) if use_vn else buf.values.clone()
        if use_vn:
            self.value_rms.update(buf.returns[live])
        adv = buf.advantages
        buf.advantages = (adv - adv[live].mean()) / (adv[live].std() + 1e-8) if live.sum() > 1 else adv

        sums: dict[str, float] = {}
        batches = 0
        for _ in range(tr.epochs):
            epoch_kl = []
            for mb in buf.minibatches(tr.minibatches, generator):
                m = mb.mask
                dist = self.actor(mb.obs)
                logp = self.log_prob(dist, mb.actions)
                log_ratio = logp - mb.logp
                ratio = log_ratio.exp()
                surrogate = torch.min(ratio * mb.advantages, ratio.clamp(1 - tr.clip, 1 + tr.clip) * mb.advantages)
                policy_loss = -masked_mean(surrogate, m)
                entropy = masked_mean(self.entropy(dist), m)
                actor_loss = policy_loss - ent_coef * entropy
                for hook in self.hooks:
                    extra = hook.actor_loss(mb, self)
                    if extra is not None:
                        actor_loss = actor_loss + extra

                value = self.critic(self.critic_input(mb.critic_obs, mb.states))
                target = self.value_rms.normalize(mb.returns) if use_vn else mb.returns
                old = mb.value_preds
                loss_v = (value - target) ** 2
                if tr.value_clip is not None:
                    clipped = old + (value - old).clamp(-tr.value_clip, tr.value_clip)
                    loss_v = torch.max(loss_v, (clipped - target) ** 2)
                critic_loss = 0.5 * masked_mean(loss_v, m)
                for hook in self.hooks:
                    extra = hook.critic_loss(mb, self)
                    if extra is not None:
                        critic_loss = critic_loss + extra

                self.actor_opt.zero_grad()
                self.critic_opt.zero_grad()
                actor_loss.backward()  # both backward passes before either step, so hook losses may span both
                critic_loss.backward()
                torch.nn.utils.clip_grad_norm_(self.actor.parameters(), tr.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), tr.max_grad_norm)
                self.actor_opt.step()
                self.critic_opt.step()

                with torch.no_grad():
                    kl = masked_mean((ratio - 1) - log_ratio, m).item()
                    clip_frac = masked_mean(((ratio - 1).abs() > tr.clip).float(), m).item()
                epoch_kl.append(kl)
                for key, val in (
                    ("policy_loss", policy_loss.item()),
                    ("value_loss", critic_loss.item()),
                    ("entropy", entropy.item()),
                    ("approx_kl", kl),
                    ("clip_frac", clip_frac),
                ):
                    sums[key] = sums.get(key, 0.0) + val
                batches += 1
            if tr.target_kl is not None and float(np.mean(epoch_kl)) > tr.target_kl:
                break

        self.actor.obs_rms.update(buf.obs[live])
        if self.state_rms is not None and buf.states is not None:
            self.state_rms.update(buf.states[:-1])
        stats = {k: v / batches for k, v in sums.items()}
        stats.update(lr=lr_actor, ent_coef=ent_coef)
        if not self.actor.discrete:
            stats["action_std"] = float(self.actor.log_std.detach().exp().mean())
        for hook in self.hooks:
            hook.after_update(self, stats)
        return stats

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: networks, normalisers, optimisers, hooks."""
        return {
            "actor": self.actor.state_dict(),
            "critic": self.critic.state_dict(),
            "value_rms": self.value_rms.state_dict(),
            "state_rms": None if self.state_rms is None else self.state_rms.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.value_rms.load_state_dict(state["value_rms"])
        if self.state_rms is not None:
            self.state_rms.load_state_dict(state["state_rms"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        if self.hooks:  # a learner built for evaluation has no hooks and ignores their state
            if len(self.hooks) != len(state["hooks"]):
                raise ValueError(
                    f"the checkpoint has {len(state['hooks'])} hook states, this learner {len(self.hooks)} hooks"
                )
            for hook, hook_state in zip(self.hooks, state["hooks"], strict=True):
                hook.load_state_dict(hook_state)
