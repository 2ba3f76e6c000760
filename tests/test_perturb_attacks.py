"""Gradient attacks stay in their ball and beat random noise; ERNIE-A's greedy search finds the worst swap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sim2real.envs import make
from sim2real.perturb import AttackTarget, Context, Pipeline, apply
from sim2real.perturb.adversarial import divergence
from sim2real.perturb.base import layout_from

torch.set_num_threads(1)
OBS_DIM, ACT_DIM = 10, 3


def gaussian_policy(seed: int = 0, obs_dim: int = OBS_DIM):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(obs_dim, 32), torch.nn.Tanh(), torch.nn.Linear(32, ACT_DIM))
    log_std = torch.full((ACT_DIM,), -1.0)

    def policy(obs):
        return torch.distributions.Normal(net(obs), log_std.exp())

    return policy, net


def attack_pipeline(spec: str, target: AttackTarget, num_envs: int = 64, num_agents: int = 4) -> Pipeline:
    layout = layout_from({"pos": 3, "vel": 3, "rest": OBS_DIM - 6})
    ctx = Context(num_envs=num_envs, num_agents=num_agents, obs_layout=layout, act_dim=ACT_DIM, dt=0.1, target=target)
    return Pipeline(spec, ctx, seed=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_beats_random_noise(norm):
    policy, _ = gaussian_policy()
    std = np.linspace(0.5, 2.0, OBS_DIM).astype(np.float32)
    target = AttackTarget(policy=policy, obs_std=std)
    eps = 0.1
    obs = np.random.default_rng(0).normal(size=(64, 4, OBS_DIM)).astype(np.float32)
    p = attack_pipeline(f"adv.pgd(eps={eps},norm={norm},steps=10)", target)
    attacked = p.observations(obs, np.zeros(64), 0)
    delta = (attacked - obs) / std  # normalised units
    size = np.abs(delta).max(-1) if norm == "linf" else np.linalg.norm(delta, axis=-1)
    assert size.max() <= eps * (1 + 1e-5)
    assert size.mean() > 0.9 * eps, "PGD should use its budget"

    with torch.no_grad():
        clean = policy(torch.as_tensor(obs))
        d_attack = divergence(policy(torch.as_tensor(attacked)), clean).mean().item()
        rng = np.random.default_rng(1)
        noise = rng.normal(size=(20, *obs.shape)).astype(np.float32)
        if norm == "linf":
            noise = np.sign(noise) * eps  # the corners: the largest l-inf noise of that size
        else:
            noise = noise / np.linalg.norm(noise, axis=-1, keepdims=True) * eps
        d_random = np.mean([divergence(policy(torch.as_tensor(obs + n * std)), clean).mean().item() for n in noise])
    assert d_attack > 2.0 * d_random


def test_fields_restrict_the_attack_and_the_policy_gets_no_gradient():
    policy, net = gaussian_policy()
    target = AttackTarget(policy=policy)
    obs = np.random.default_rng(0).normal(size=(8, 4, OBS_DIM)).astype(np.float32)
    p = attack_pipeline("adv.pgd(eps=0.2,fields=vel,agents=[2])+adv.fgsm(eps=0.1,fields=pos,agents=[0])", target, 8)
    attacked = p.observations(obs, np.zeros(8), 0)
    changed = attacked != obs
    assert not changed[:, [1, 3]].any()
    # PGD moves the selected columns (a step sum can round back to ~0 in float32, so not every single one)
    assert changed[:, 2, 3:6].mean() > 0.9 and not changed[:, 2, :3].any() and not changed[:, 2, 6:].any()
    assert np.allclose(np.abs(attacked - obs)[:, 0, :3], 0.1, atol=1e-6), "FGSM l-inf uses the full budget"
    assert all(param.grad is None for param in net.parameters())


def test_critic_objective_lowers_the_critic():
    policy, _ = gaussian_policy()
    w = torch.tensor([1.0, -2.0, 0.5])

    def critic(obs, action):
        return (action * w).sum(-1)

    target = AttackTarget(policy=policy, action_critic=critic)
    obs = np.random.default_rng(0).normal(size=(32, 4, OBS_DIM)).astype(np.float32)
    for spec in ("adv.fgsm(eps=0.1,objective=critic)", "adv.pgd(eps=0.1,objective=critic)"):
        attacked = attack_pipeline(spec, target, 32).observations(obs, np.zeros(32), 0)
        with torch.no_grad():
            q_clean = critic(None, policy(torch.as_tensor(obs)).mean)
            q_attacked = critic(None, policy(torch.as_tensor(attacked)).mean)
        assert (q_attacked < q_clean).float().mean() > 0.95


def test_attack_needs_a_target_and_works_through_the_env_wrapper():
    env = make("drone-hover", num_envs=4, num_drones=2)
    penv = apply(env, "adv.pgd(eps=0.05,steps=3)", seed=0)
    with pytest.raises(RuntimeError, match="needs an AttackTarget with `policy`"):
        penv.reset()
    policy, _ = gaussian_policy(obs_dim=env.obs_dim)
    penv.set_target(AttackTarget(policy=policy))
    obs, info = penv.reset()
    assert 0 < np.abs(obs - info["clean_obs"]).max() <= 0.05 + 1e-6
    env.close()


def test_learned_adversary_is_scaled_into_the_budget():
    class Constant:
        def act(self, obs):
            return np.full(obs.shape, 3.0, np.float32)  # out of range on purpose: clipped to 1

    obs = np.zeros((2, 4, OBS_DIM), np.float32)
    out = attack_pipeline("adv.learned(eps=0.2,fields=pos)", AttackTarget(adversary=Constant()), 2).observations(
        obs, np.zeros(2), 0
    )
    assert np.allclose(out[..., :3], 0.2) and np.all(out[..., 3:] == 0)


def test_adversarial_malicious_agent_is_the_greedy_worst_swap():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, ACT_DIM))

    def team_critic(obs, actions):  # a centralised Q that depends on every agent's action
        return -np.sum((actions - 0.3) ** 2 * np.abs(weights), axis=(1, 2)) + np.sum(actions * weights, axis=(1, 2))

    target = AttackTarget(team_critic=team_critic)
    p = attack_pipeline("agents.malicious(rate=1,k=1,mode=adversarial)", target, 16)
    acts = rng.uniform(-0.5, 0.5, (16, 4, ACT_DIM)).astype(np.float32)
    obs = np.zeros((16, 4, OBS_DIM), np.float32)
    out = p.actions(acts, obs, np.zeros(16), 0)
    changed = np.any(out != acts, axis=-1)
    assert np.all(changed.sum(-1) == 1)
    q_out = team_critic(obs, out)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=ACT_DIM)))
    for e in range(16):  # brute force over single-agent corner swaps: nothing is lower
        for i, c in itertools.product(range(4), corners):
            trial = acts[e : e + 1].copy()
            trial[0, i] = c
            assert q_out[e] <= team_critic(obs[:1], trial)[0] + 1e-9
    assert np.all(q_out < team_critic(obs, acts))
    p2 = attack_pipeline("agents.malicious(rate=1,k=2,mode=adversarial)", target, 16)
    out2 = p2.actions(acts, obs, np.zeros(16), 0)
    assert np.all(np.any(out2 != acts, axis=-1).sum(-1) == 2) and np.all(team_critic(obs, out2) <= q_out + 1e-9)
