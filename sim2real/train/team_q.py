"""A joint-action team critic ``Q(s, a)`` for a trained MAPPO run, fitted after training.

ERNIE-A's adversarial teammates (``agents.malicious(mode=adversarial)``, Bukharin et al. 2023, Eq. 5) search
for the joint action that most lowers a centralised ``Q(s, a)``. MADDPG learns such a critic; MAPPO learns
only the state value ``V(s)``. We obtain the trained policy's Q from the one-step Bellman equation

    Q^pi(s, a) = r(s, a) + gamma * (1 - terminal) * V^pi(s'),

with ``V`` the run's own centralised critic, summed over the team (rewards and values of every live agent).
The greedy search compares actions at one state, so only ``Q(s, a) - Q(s, pi(s))`` matters. A network
``A_phi(s, a)`` regresses exactly that difference, measured counterfactually on the batched twin: from the same
state, a copy of the env takes the swapped joint action while the rollout takes the policy's
(:func:`collect_transitions`). Regressing ``r + gamma V(s') - V(s)`` along a rollout instead fails (held-out
R^2 below 0 on the 4-drone hover): the critic's error between ``s`` and ``s'`` swamps the effect of the action.
``Q(s, a) = V(s) + A_phi(s, a)`` (``V(s) = Q(s, pi(s))`` for the deterministic policy).
The fit's held-out R^2 is stored with it.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sim2real.envs import make
from sim2real.train.networks import mlp
from sim2real.train.runner import LoadedRun

TEAM_Q_DIR = "team_q"  # in the run directory


class TeamAdvantage(nn.Module):
    """``A_phi(s, a)``: normalised joint observation ``[B, N*D]`` and joint action ``[B, N*A]`` -> ``[B]``.

    The output is in raw return units (the regression targets are standardised inside).
    """

    def __init__(self, num_agents: int, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.body = mlp(num_agents * (obs_dim + act_dim), hidden, "relu")
        self.head = nn.Linear(hidden[-1], 1)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def forward(self, joint_obs: torch.Tensor, joint_action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([joint_obs, joint_action], dim=-1)
        return self.head(self.body(x)).squeeze(-1) * self.target_std + self.target_mean


def malicious_candidates(actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One malicious candidate per agent for ``actions [E, N, A]``: a box corner, zero, ``-a`` or uniform."""
    e, n, a = actions.shape
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=a)), dtype=np.float32)
    pool = np.concatenate(
        [
            np.broadcast_to(corners, (e, n, *corners.shape)),
            np.zeros((e, n, 1, a), np.float32),
            -actions[:, :, None, :],
            rng.uniform(-1.0, 1.0, (e, n, 1, a)).astype(np.float32),
        ],
        axis=2,
    )
    pick = rng.integers(0, pool.shape[2], (e, n))
    return np.take_along_axis(pool, pick[:, :, None, None], axis=2)[:, :, 0]


def team_one_step_q(
    learner: Any, gamma: float, reward: np.ndarray, terminated: np.ndarray, info: dict, next_obs: np.ndarray
) -> torch.Tensor:
    """``sum_i r_i + gamma * (1 - terminal_i) V_i(s')`` over the live agents of one step, ``[E]``."""
    after = next_obs  # s': the final observation for envs that ended (next_obs is already reset there)
    if "final_obs" in info:
        after = np.where(info["done_env"][:, None, None], info["final_obs"], next_obs)
    live = torch.as_tensor(info["active"], dtype=torch.float32)
    keep = live * (1.0 - torch.as_tensor(terminated, dtype=torch.float32))
    with torch.no_grad():
        return (live * torch.as_tensor(reward) + gamma * keep * learner.values(torch.as_tensor(after))).sum(-1)


def collect_transitions(
    loaded: LoadedRun, *, num_envs: int = 256, steps: int = 400, seed: int = 0, progress: bool = False
) -> dict[str, torch.Tensor]:
    """Roll out the run's deterministic policy and measure what swapping agents' actions does.

    At every step, a copy of the (batched) env takes the joint action in which, on half the envs, each agent
    is swapped for a random malicious candidate with a probability drawn per env; the rollout itself goes on
    with the policy's actions. Returns ``joint_obs [M, N*D]`` (normalised), ``joint_action [M, N*A]`` (the
    copy's) and ``advantage [M]``: the counterfactual one-step difference
    ``Q1(s, a') - Q1(s, pi(s))`` of :func:`team_one_step_q` (exactly 0 where nothing was swapped), with
    ``M = num_envs * steps``. Comparing the two actions from the same state cancels the critic's error at
    ``s`` and most of it at ``s'``.
    """
    learner, config = loaded.learner, loaded.config
    if learner.actor.discrete:
        raise ValueError("the team Q is fitted for continuous (Box) actions; this run's actions are discrete")
    gamma = config.train.gamma
    env = make(config.env.name, num_envs=num_envs, seed=seed, **config.env.make_kwargs())
    rng = np.random.default_rng(seed)
    act = learner.policy(deterministic=True)
    obs, _ = env.reset(seed=seed)
    joint_obs, joint_action, advantage = [], [], []
    try:
        for _ in tqdm(range(steps), desc="team Q rollouts", unit="step", disable=not progress, leave=False):
            actions = act(obs)
            e, n = actions.shape[:2]
            swap = (rng.random((e, n)) < rng.random((e, 1))) & (rng.random((e, 1)) < 0.5)
            swapped = np.where(swap[..., None], malicious_candidates(actions, rng), actions).astype(np.float32)
            trial = copy.deepcopy(env)
            trial_obs, trial_reward, trial_terminated, _, trial_info = trial.step(swapped)
            q_swapped = team_one_step_q(learner, gamma, trial_reward, trial_terminated, trial_info, trial_obs)
            next_obs, reward, terminated, _, info = env.step(actions)
            q_policy = team_one_step_q(learner, gamma, reward, terminated, info, next_obs)
            advantage.append(torch.where(torch.as_tensor(swap.any(axis=1)), q_swapped - q_policy, 0.0))
            with torch.no_grad():
                joint_obs.append(learner.actor.normalize(torch.as_tensor(obs)).flatten(1))
            joint_action.append(torch.as_tensor(swapped).flatten(1))
            obs = next_obs
    finally:
        env.close()
    return {
        "joint_obs": torch.cat(joint_obs),
        "joint_action": torch.cat(joint_action),
        "advantage": torch.cat(advantage),
    }


def fit_team_q(
    loaded: LoadedRun,
    *,
    num_envs: int = 256,
    steps: int = 300,
    epochs: int = 30,
    hidden: tuple[int, ...] = (256, 256),
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> tuple[TeamAdvantage, dict[str, Any]]:
    """Fit ``A_phi`` on fresh rollouts of ``loaded``'s policy; returns it and the fit statistics.

    10% of the transitions are held out; ``heldout_r2`` is the held-out coefficient of determination.
    """
    torch.manual_seed(seed)
    data = collect_transitions(loaded, num_envs=num_envs, steps=steps, seed=seed, progress=progress)
    actor = loaded.learner.actor
    y = data["advantage"]
    order = torch.randperm(y.shape[0])
    test, train = order[: y.shape[0] // 10], order[y.shape[0] // 10 :]
    net = TeamAdvantage(actor.num_agents, actor.obs_dim, actor.act_dim, list(hidden))
    net.target_mean.fill_(float(y[train].mean()))
    net.target_std.fill_(float(y[train].std().clamp_min(1e-8)))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in tqdm(range(epochs), desc="team Q fit", unit="epoch", disable=not progress, leave=False):
        for idx in train[torch.randperm(train.numel())].split(1024):
            pred = net(data["joint_obs"][idx], data["joint_action"][idx])
            loss = (((pred - y[idx]) / net.target_std) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = net(data["joint_obs"][test], data["joint_action"][test])
        r2 = 1.0 - float(((pred - y[test]) ** 2).mean() / y[test].var().clamp_min(1e-12))
    stats = {
        "checkpoint": loaded.checkpoint.name,
        "transitions": int(y.shape[0]),
        "epochs": epochs,
        "hidden": list(hidden),
        "seed": seed,
        "heldout_r2": round(r2, 4),
    }
    return net, stats


def load_or_fit_team_q(loaded: LoadedRun, *, progress: bool = False) -> tuple[TeamAdvantage, dict[str, Any]]:
    """The team Q of ``loaded``'s checkpoint, cached in ``RUN/team_q/CHECKPOINT.pt``; fitted when missing
    (about 50 s on one core for the 4-drone hover)."""
    actor = loaded.learner.actor
    path = loaded.checkpoint.parent.parent / TEAM_Q_DIR / f"{loaded.checkpoint.stem}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = TeamAdvantage(actor.num_agents, actor.obs_dim, actor.act_dim, saved["stats"]["hidden"])
        net.load_state_dict(saved["net"])
        return net, saved["stats"]
    net, stats = fit_team_q(loaded, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"net": net.state_dict(), "stats": stats}, tmp)
    tmp.replace(path)
    return net, stats


def team_critic(
    loaded: LoadedRun, *, progress: bool = False
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any]]:
    """The numpy ``AttackTarget.team_critic`` of a MAPPO run and its fit statistics.

    The critic maps ``(obs [B, N, D], actions [B, N, A])`` to ``Q [B] = sum_i V_i(s) + A_phi(s, a)`` in raw
    return units (see the module docstring).
    """
    learner = loaded.learner
    net, stats = load_or_fit_team_q(loaded, progress=progress)
    net.eval()

    @torch.no_grad()
    def q(obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32))
        return (learner.values(o).sum(-1) + net(learner.actor.normalize(o).flatten(1), a.flatten(1))).numpy()

    return q, stats
