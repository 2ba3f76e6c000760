"""Actor and critic networks for the on-policy learners (parameter sharing across agents).

Inputs are per-agent observations ``[..., N, D]`` with the agent axis second to last, so a one-hot agent id
can be appended from the position on that axis. The actor owns the observation normaliser, so exporting the
actor exports the normalisation with it.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

from sim2real.train.normalize import RunningMeanStd

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def mlp(in_dim: int, hidden: list[int], activation: str) -> nn.Sequential:
    """Hidden layers ``in_dim -> hidden[0] -> ... -> hidden[-1]``, orthogonal init (gain sqrt 2), zero biases."""
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [init_linear(nn.Linear(in_dim, size), math.sqrt(2.0)), ACTIVATIONS[activation]()]
        in_dim = size
    return nn.Sequential(*layers)


def init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain``, zero bias (the PPO implementation details)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def with_agent_id(x: torch.Tensor) -> torch.Tensor:
    """Append a one-hot id of each row's position on the agent axis: ``[..., N, F] -> [..., N, F + N]``."""
    n = x.shape[-2]
    eye = torch.eye(n, dtype=x.dtype, device=x.device).expand(*x.shape[:-2], n, n)
    return torch.cat([x, eye], dim=-1)


class Actor(nn.Module):
    """Shared actor: Gaussian head for ``Box`` actions, categorical head for ``Discrete`` actions.

    Gaussian actions are sampled unbounded with a state-independent log std (the env clips them to the box);
    the deterministic action is the mean clipped to the box.

    Args:
        obs_dim: per-agent observation size D.
        num_agents: N (size of the one-hot id).
        action_space: one agent's ``gym.spaces.Box`` (1-D) or ``gym.spaces.Discrete``.
        hidden, activation: MLP body.
        agent_id: append the one-hot agent id after normalisation.
        init_log_std: initial log standard deviation of Gaussian actions.
        obs_norm: normalise observations with the running statistics in ``obs_rms``.
    """

    def __init__(
        self,
        obs_dim: int,
        num_agents: int,
        action_space: gym.Space,
        hidden: list[int],
        activation: str = "tanh",
        *,
        agent_id: bool = True,
        init_log_std: float = -0.5,
        obs_norm: bool = True,
    ) -> None:
        super().__init__()
        self.obs_dim, self.num_agents = obs_dim, num_agents
        self.agent_id, self.use_obs_norm = agent_id, obs_norm
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.body = mlp(obs_dim + (num_agents if agent_id else 0), hidden, activation)
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete = True
            self.head = init_linear(nn.Linear(hidden[-1], int(action_space.n)), 0.01)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete = False
            self.act_dim = act_dim = action_space.shape[0]
            self.head = init_linear(nn.Linear(hidden[-1], act_dim), 0.01)
            self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
        else:
            raise ValueError(f"the actor supports 1-D Box and Discrete action spaces, got {action_space}")

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations ``[..., N, D]`` in normalised units (identity when obs_norm is off)."""
        return self.obs_rms.normalize(obs) if self.use_obs_norm else obs

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Network input for raw observations ``[..., N, D]``: normalised, with the agent id if enabled."""
        x = self.normalize(obs)
        return with_agent_id(x) if self.agent_id else x

    def forward(self, obs: torch.Tensor) -> Distribution:
        """The action distribution for raw observations ``[..., N, D]`` (batch shape ``[..., N]``)."""
        return self.dist_normalized(self.normalize(obs))

    def dist_normalized(self, x: torch.Tensor) -> Distribution:
        """The action distribution for observations ``[..., N, D]`` already in normalised units.

        Robust-training regularisers perturb here, so their budgets are in normalised units (the agent id is
        appended after, and is never perturbed).
        """
        out = self.head(self.body(with_agent_id(x) if self.agent_id else x))
        if self.discrete:
            return Categorical(logits=out)
        return Normal(out, self.log_std.exp().expand_as(out))

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """Greedy action: the mean clipped to the box ``[..., N, A]``, or the most likely index ``[..., N]``."""
        out = self.head(self.body(self.features(obs)))
        if self.discrete:
            return out.argmax(-1)
        return torch.maximum(torch.minimum(out, self.high), self.low)


class Critic(nn.Module):
    """Value network, one value per agent ``[..., N]``.

    ``centralized``: the input is every agent's normalised observation concatenated (or the env's global
    state when one is given), the same for each agent, plus the agent's one-hot id (MAPPO). Otherwise each
    agent's value depends on its own observation only (IPPO).
    """

    def __init__(
        self,
        obs_dim: int,
        num_agents: int,
        hidden: list[int],
        activation: str = "tanh",
        *,
        centralized: bool = True,
        agent_id: bool = True,
        state_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.centralized, self.agent_id = centralized, agent_id
        if centralized:
            in_dim = state_dim if state_dim is not None else obs_dim * num_agents
        else:
            in_dim = obs_dim
        self.body = mlp(in_dim + (num_agents if agent_id else 0), hidden, activation)
        self.head = init_linear(nn.Linear(hidden[-1], 1), 1.0)

    def inputs(self, obs: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """Critic input ``[..., N, C]`` from normalised observations ``[..., N, D]`` and a state ``[..., S]``/None."""
        n = obs.shape[-2]
        if self.centralized:
            joint = state if state is not None else obs.flatten(-2)
            x = joint.unsqueeze(-2).expand(*joint.shape[:-1], n, joint.shape[-1])
        else:
            x = obs
        return with_agent_id(x) if self.agent_id else x

    def forward(self, critic_in: torch.Tensor) -> torch.Tensor:
        """Normalised values ``[..., N]`` for critic inputs ``[..., N, C]``."""
        return self.head(self.body(critic_in)).squeeze(-1)
