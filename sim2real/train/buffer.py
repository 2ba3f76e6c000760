"""Rollout storage for on-policy learners and generalised advantage estimation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class MiniBatch:
    """Samples of whole time steps (all N agents of an env together), ``B`` rows.

    Attributes:
        obs: ``[B, N, D]`` raw observations the actor acted on.
        critic_obs: ``[B, N, D]`` raw clean observations the critic sees.
        states: ``[B, S]`` the env's global states, or None.
        actions: ``[B, N, A]`` float (Box) or ``[B, N]`` long (Discrete).
        logp: ``[B, N]`` log-probabilities under the rollout policy.
        advantages: ``[B, N]`` GAE advantages (not normalised).
        returns: ``[B, N]`` value targets (raw units).
        value_preds: ``[B, N]`` the critic's outputs at rollout time, in its own (normalised) units.
        mask: ``[B, N]`` 1.0 for agents that were live, 0.0 for inactive ones.
    """

    obs: torch.Tensor
    critic_obs: torch.Tensor
    states: torch.Tensor | None
    actions: torch.Tensor
    logp: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    value_preds: torch.Tensor
    mask: torch.Tensor


def gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 11-16).

    Args:
        rewards: ``[T, ...]`` rewards; time-limit bootstraps ``gamma V(s_final)`` already added.
        values: ``[T + 1, ...]`` value estimates of ``s_0 .. s_T`` (raw units).
        dones: ``[T, ...]`` 1.0 where the step ended the agent's episode (no bootstrap from ``values[t + 1]``).

    Returns:
        advantages and returns (``advantages + values[:-1]``), both ``[T, ...]``.
    """
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        keep = 1.0 - dones[t]
        delta = rewards[t] + gamma * values[t + 1] * keep - values[t]
        last = delta + gamma * lam * keep * last
        adv[t] = last
    return adv, adv + values[:-1]


class RolloutBuffer:
    """``T`` steps of ``E`` envs with ``N`` agents each; time-major tensors ``[T, E, N, ...]``.

    ``obs`` is what the actor acted on (possibly transformed by a hook); ``critic_obs`` and ``states`` are the
    clean observations and global states of ``s_0 .. s_T`` (one more step, for the last value).
    """

    def __init__(
        self,
        steps: int,
        num_envs: int,
        num_agents: int,
        obs_dim: int,
        act_shape: tuple[int, ...],
        *,
        discrete: bool,
        state_dim: int | None = None,
    ) -> None:
        t, e, n = steps, num_envs, num_agents
        self.steps = steps
        self.obs = torch.zeros(t, e, n, obs_dim)
        self.critic_obs = torch.zeros(t + 1, e, n, obs_dim)
        self.states = None if state_dim is None else torch.zeros(t + 1, e, state_dim)
        self.actions = torch.zeros(t, e, n, *act_shape, dtype=torch.long if discrete else torch.float32)
        self.logp = torch.zeros(t, e, n)
        self.rewards = torch.zeros(t, e, n)
        self.dones = torch.zeros(t, e, n)
        self.mask = torch.zeros(t, e, n)
        self.advantages = torch.zeros(t, e, n)
        self.returns = torch.zeros(t, e, n)
        self.values = torch.zeros(t + 1, e, n)  # raw units, for GAE
        self.value_preds = torch.zeros(t + 1, e, n)  # critic output units, for the clipped value loss

    def minibatches(self, count: int, generator: torch.Generator) -> Iterator[MiniBatch]:
        """``count`` shuffled minibatches over the ``T * E`` (time, env) rows."""
        rows = self.steps * self.obs.shape[1]
        flat = {
            "obs": self.obs.flatten(0, 1),
            "critic_obs": self.critic_obs[:-1].flatten(0, 1),
            "states": None if self.states is None else self.states[:-1].flatten(0, 1),
            "actions": self.actions.flatten(0, 1),
            "logp": self.logp.flatten(0, 1),
            "advantages": self.advantages.flatten(0, 1),
            "returns": self.returns.flatten(0, 1),
            "value_preds": self.value_preds[:-1].flatten(0, 1),
            "mask": self.mask.flatten(0, 1),
        }
        perm = torch.randperm(rows, generator=generator)
        for idx in perm.chunk(count):
            yield MiniBatch(**{k: None if v is None else v[idx] for k, v in flat.items()})
