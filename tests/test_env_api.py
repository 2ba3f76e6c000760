"""The batched multi-agent API, the PettingZoo adapter and the task rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from sim2real.envs import env_names, make, make_parallel
from sim2real.envs.drones import CF2X
from sim2real.envs.drones.tasks import pairwise_optimal_assignment, squared_distances

TASKS = ["drone-hover", "drone-formation", "drone-navigation"]


def test_registry_lists_the_three_swarm_tasks() -> None:
    assert set(TASKS) <= set(env_names())
    with pytest.raises(ValueError, match="registered are"):
        make("drone-racing")


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("action_type", ["vel", "rpm"])
def test_spaces_and_dtypes_match_exactly(name: str, action_type: str) -> None:
    env = make(name, num_envs=3, num_drones=5, action_type=action_type, seed=0)
    obs, _ = env.reset()
    assert obs.dtype == np.float32 and obs.shape == (3, 5, env.obs_dim)
    assert env.observation_space.contains(obs)
    assert env.single_observation_space.contains(obs[0, 0])
    assert env.act_dim == (3 if action_type == "vel" else 4)
    act = env.action_space.sample()
    assert act.dtype == np.float32 and env.action_space.contains(act)
    obs, rew, term, trunc, _ = env.step(act)
    assert rew.dtype == np.float32 and rew.shape == (3, 5)
    assert term.dtype == bool and trunc.dtype == bool and term.shape == trunc.shape == (3, 5)
    assert env.observation_space.contains(obs)
    layout = env.obs_layout
    assert layout[0].start == 0 and sum(f.size for f in layout) == env.obs_dim
    assert all(a.start + a.size == b.start for a, b in itertools.pairwise(layout))


def test_observation_fields_hold_what_the_layout_says() -> None:
    env = make("drone-hover", num_envs=2, num_drones=4, backend="pybullet", seed=1)
    try:
        obs, _ = env.reset()
        pos, vel = env.sim.pos, env.sim.vel
        np.testing.assert_allclose(obs[..., env.obs_field("rel_target")], env.task.targets - pos, atol=1e-6)
        np.testing.assert_allclose(obs[..., env.obs_field("altitude")][..., 0], pos[..., 2], atol=1e-6)
        np.testing.assert_allclose(obs[..., env.obs_field("rot")], env.sim.rot.reshape(2, 4, 9), atol=1e-6)
        nbr = obs[..., env.obs_field("nbr_rel_pos")].reshape(2, 4, 3, 3)
        d = np.linalg.norm(nbr, axis=-1)
        assert np.all(np.diff(d, axis=-1) >= 0)  # nearest first
        for e in range(2):
            for i in range(4):
                others = np.delete(pos[e], i, axis=0) - pos[e, i]
                np.testing.assert_allclose(np.sort(d[e, i]), np.sort(np.linalg.norm(others, axis=-1)), atol=1e-5)
        assert np.all(vel == 0)
    finally:
        env.close()


def test_spawn_is_random_separated_and_above_the_ground() -> None:
    env = make("drone-navigation", num_envs=64, num_drones=8, seed=0)
    env.reset()
    pos = env.sim.pos
    assert np.all(pos[..., 2] >= CF2X.collision_height / 2)
    d = np.linalg.norm(pos[:, :, None] - pos[:, None], axis=-1) + np.eye(8) * 10
    assert d.min() >= 0.3
    assert np.std(pos[:, 0, 0]) > 0.1  # not the same spawn everywhere
    with pytest.raises(ValueError, match="inside the ground"):
        make("drone-hover", spawn_height=(0.0, 1.0))


@pytest.mark.parametrize("backend", ["batched", "pybullet"])
def test_same_seed_same_rollout_other_seed_other_rollout(backend: str) -> None:
    def rollout(seed: int) -> np.ndarray:
        env = make("drone-formation", num_envs=2, num_drones=3, backend=backend, seed=seed, action_type="rpm")
        try:
            obs, _ = env.reset()
            rng = np.random.default_rng(seed)
            for _ in range(20):
                obs, *_ = env.step(rng.uniform(-0.2, 0.2, (2, 3, 4)).astype(np.float32))
            return obs
        finally:
            env.close()

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.allclose(rollout(7), rollout(8))


def test_finished_envs_reset_automatically_and_keep_the_final_observation() -> None:
    env = make("drone-hover", num_envs=2, num_drones=2, seed=0, episode_len_s=10.0)
    obs, _ = env.reset()
    up = np.zeros((2, 2, 3), dtype=np.float32)
    up[0, :, 2] = 1.0  # env 0 climbs out of the arena; env 1 holds position
    ended = np.zeros((2, 2), dtype=bool)
    for _ in range(400):
        obs, rew, term, trunc, info = env.step(up)
        assert np.all(rew[term] < -5) and np.all(rew[~info["active"]] == 0)  # penalty once, then nothing
        assert np.all(info["out_of_arena"] == term)
        ended |= term
        if info["done_env"].any():
            break
    assert info["done_env"].tolist() == [True, False]
    assert ended[0].all() and not ended[1].any() and not trunc.any()
    final_alt = info["final_obs"][0, :, env.obs_field("altitude")]
    assert np.all(final_alt > env.arena_z - 0.5)
    assert np.all(obs[0, :, env.obs_field("altitude")] < 1.5)  # fresh spawn
    assert env.steps[0] == 0 and env.steps[1] > 0 and env.active.all()
    assert info["episode_length"][0] > 0 and np.all(info["episode_return"][0] < 0)


def test_an_agent_is_never_both_terminated_and_truncated() -> None:
    env = make(
        "drone-hover",
        num_envs=1,
        num_drones=2,
        seed=0,
        episode_len_s=2.0,
        spawn_height=(2.5, 2.5),
        target_height=(1.0, 1.5),
    )
    env.reset()
    up = np.zeros((1, 2, 3), dtype=np.float32)
    up[0, 0, 2] = 1.0  # drone 0 climbs through the 3 m arena top at about the time limit
    for _ in range(env.max_steps):
        _, _, term, trunc, info = env.step(up)
        assert not np.any(term & trunc)
    assert info["done_env"][0]


def test_time_limit_truncates_every_agent() -> None:
    env = make("drone-hover", num_envs=1, num_drones=3, seed=0, episode_len_s=0.5)
    env.reset()
    for k in range(15):
        _, _, term, trunc, info = env.step(np.zeros((1, 3, 3), dtype=np.float32))
        assert trunc.all() == (k == 14)
    assert info["done_env"][0] and not term.any()


def test_collision_terminates_both_agents_and_the_rest_fly_on() -> None:
    env = make("drone-hover", num_envs=1, num_drones=3, seed=0, backend="pybullet")
    try:
        env.reset()
        q = np.tile([0, 0, 0, 1.0], (1, 3, 1))
        env.sim.set_state(
            None, np.array([[[-0.3, 0, 1.0], [0.3, 0, 1.0], [0, 1.5, 1.0]]]), q, rpm=np.full((1, 3, 4), CF2X.hover_rpm)
        )
        act = np.zeros((1, 3, 3), dtype=np.float32)
        act[0, 0, 0], act[0, 1, 0] = 1.0, -1.0
        for _ in range(30):
            _, rew, term, _, info = env.step(act)
            if term.any():
                break
        assert term[0].tolist() == [True, True, False]
        assert info["collision"][0].tolist() == [True, True, False]
        _, rew, term, _, info = env.step(act)
        assert info["active"][0].tolist() == [False, False, True]
        assert rew[0, 0] == 0.0 and rew[0, 1] == 0.0 and not term.any()
    finally:
        env.close()


def test_hard_landing_is_a_crash() -> None:
    env = make("drone-hover", num_envs=1, num_drones=1, seed=0, action_type="rpm")
    env.reset()
    env.sim.set_state(None, np.array([[[0, 0, 1.0]]]), np.array([[[0, 0, 0, 1.0]]]))
    for _ in range(30):
        _, _, term, _, info = env.step(-np.ones((1, 1, 4), dtype=np.float32))
        if term.any():
            break
    assert info["crash"][0, 0] and term[0, 0]


def test_navigation_reports_coverage() -> None:
    env = make("drone-navigation", num_envs=1, num_drones=3, seed=0)
    env.reset()
    goals = env.task.targets.copy()
    env.sim.set_state(None, goals, np.tile([0, 0, 0, 1.0], (1, 3, 1)), rpm=np.full((1, 3, 4), CF2X.hover_rpm))
    obs, rew, _, _, info = env.step(np.zeros((1, 3, 3), dtype=np.float32))
    assert info["coverage"][0] == 1.0
    assert np.all(rew > 0.9)
    assert obs.shape[-1] == env.obs_dim and np.allclose(obs[0, :, env.obs_field("rel_goals")][:, :3], 0, atol=0.02)


def test_pairwise_optimal_assignment_admits_no_improving_swap() -> None:
    rng = np.random.default_rng(0)
    cost = squared_distances(rng.random((500, 4, 3)), rng.random((500, 4, 3)))
    goal = pairwise_optimal_assignment(cost)
    assert np.all(np.sort(goal, axis=1) == np.arange(4))  # a permutation in every env
    total = np.take_along_axis(cost, goal[..., None], axis=2).sum(axis=(1, 2))
    for i, j in itertools.combinations(range(4), 2):
        swapped = goal.copy()
        swapped[:, [i, j]] = swapped[:, [j, i]]
        assert np.all(np.take_along_axis(cost, swapped[..., None], axis=2).sum(axis=(1, 2)) >= total - 1e-12)
    optimum = np.min([cost[:, np.arange(4), list(p)].sum(axis=1) for p in itertools.permutations(range(4))], axis=0)
    assert np.all(total <= cost[:, np.arange(4), np.arange(4)].sum(axis=1) + 1e-12)  # never worse than the start
    assert np.mean(np.isclose(total, optimum)) > 0.9  # a local optimum that is mostly the global one


@pytest.mark.parametrize("assignment", ["capt", "random"])
def test_hover_assignment_decides_whether_spawn_to_target_paths_may_improve_by_a_swap(assignment: str) -> None:
    env = make("drone-hover", num_envs=256, num_drones=4, seed=0, assignment=assignment)
    env.reset()
    cost = squared_distances(env.sim.pos, env.task.targets)
    own = np.diagonal(cost, axis1=1, axis2=2)
    gain = own[:, :, None] + own[:, None, :] - cost - np.swapaxes(cost, 1, 2)  # what swapping i and j saves
    improvable = np.mean(np.any(gain.reshape(256, -1) > 1e-12, axis=1))
    if assignment == "capt":
        assert improvable == 0.0
    else:
        assert improvable > 0.5  # random orders are mostly improvable, so the paths often cross
    env.close()
    with pytest.raises(ValueError, match="assignment must be one of"):
        make("drone-hover", num_envs=1, assignment="nearest")


def test_navigation_targets_come_from_a_pairwise_optimal_goal_matching() -> None:
    env = make("drone-navigation", num_envs=1, num_drones=3, seed=0)
    env.reset()
    goals = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]])
    env.task.targets = goals.copy()
    # drone 1 sits closest to goal 0, drone 0 next to it; drone 2 sits near goal 2
    pos = np.array([[[0.3, 0.0, 1.0], [0.05, 0.0, 1.0], [0.0, 1.02, 1.0]]])
    env.sim.set_state(None, pos, np.tile([0, 0, 0, 1.0], (1, 3, 1)), rpm=np.full((1, 3, 4), CF2X.hover_rpm))
    goal, dist = env.task.matching(pos, np.ones((1, 3), bool))
    assert goal[0].tolist() == [1, 0, 2]  # 0.7^2 + 0.05^2 < 0.3^2 + 0.95^2: drone 0 takes the goal left over
    np.testing.assert_allclose(dist[0], [0.7, 0.05, 0.02], atol=1e-9)
    obs = env.observe()
    np.testing.assert_allclose(obs[0, 0, env.obs_field("rel_target")], goals[0, 1] - pos[0, 0], atol=1e-6)
    # a crashed drone claims no goal: drone 1 down, drone 0 takes goal 0 back
    goal, dist = env.task.matching(pos, np.array([[True, False, True]]))
    assert goal[0].tolist() == [0, -1, 2] and np.isinf(dist[0, 1])
    # where the closest pair first would cross paths, the matching does not: drone 1 (x = 1) is the closest
    # to goal 0 (x = 0.55), but then drone 0 (x = 0) would fly past it to goal 1 (x = 1.5)
    env.task.targets = np.array([[[0.55, 0.0, 1.0], [1.5, 0.0, 1.0], [0.0, 1.0, 1.0]]])
    pos = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]])
    goal, _ = env.task.matching(pos, np.ones((1, 3), bool))
    assert goal[0].tolist() == [0, 1, 2]
    env.close()


@pytest.mark.parametrize("name", TASKS)
@pytest.mark.parametrize("backend", ["batched", "pybullet"])
def test_pettingzoo_parallel_api(name: str, backend: str) -> None:
    env = make_parallel(name, num_drones=3, backend=backend, seed=0)
    try:
        parallel_api_test(env, num_cycles=100)
    finally:
        env.close()


def test_invalid_configs_and_actions_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="multiple of ctrl_freq"):
        make("drone-hover", ctrl_freq=7)
    with pytest.raises(ValueError, match="action_type"):
        make("drone-hover", action_type="thrust")
    with pytest.raises(ValueError, match="unknown effect"):
        make("drone-hover", effects=("gusts",))
    with pytest.raises(ValueError, match="unknown drone model"):
        make("drone-hover", model="cf3")
    with pytest.raises(ValueError, match="num_envs"):
        make_parallel("drone-hover", num_envs=4)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['ring_radius'\].*'spacing'"):
        make("drone-formation", ring_radius=0.5)
    with pytest.raises(ValueError, match="auto_reset=False needs num_envs=1"):
        make("drone-hover", num_envs=2, auto_reset=False)
    with pytest.raises(ValueError, match="below the arena top"):
        make("drone-hover", spawn_height=(4.0, 5.0))
    with pytest.raises(ValueError, match="pair"):
        make("drone-hover", spawn_height=0.5)
    with pytest.raises(ValueError, match="episode_len_s must last at least one control step"):
        make("drone-hover", episode_len_s=0.01)
    with pytest.raises(ValueError, match="crash_tilt"):
        make("drone-hover", crash_tilt=-1.0)
    env = make("drone-hover", num_envs=2, num_drones=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 2, 3), dtype=np.float32))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(2, 2, 3\)"):
        env.step(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full((2, 2, 3), np.nan, dtype=np.float32))


def test_separation_reward_penalises_close_neighbours_and_weights_validate() -> None:
    rewards = {}
    for weight in (0.0, 0.5):
        env = make(
            "drone-hover", num_envs=3, num_drones=3, seed=4, reward={"separation": weight, "separation_dist": 1.0}
        )
        env.reset()
        _, rewards[weight], _, _, _ = env.step(np.zeros((3, 3, 3), np.float32))
        pos = env.sim.pos
    gap = np.linalg.norm(pos[:, :, None] - pos[:, None, :], axis=-1) + np.eye(3) * 1e9
    expected = 0.5 * np.clip(1.0 - gap.min(axis=-1), 0.0, 1.0)
    assert np.all(expected > 0)
    np.testing.assert_allclose(rewards[0.0] - rewards[0.5], expected, atol=1e-5)
    with pytest.raises(ValueError, match="unknown reward weight"):
        make("drone-hover", reward={"seperation": 1.0})
    with pytest.raises(ValueError, match="separation_dist"):
        make("drone-hover", reward={"separation_dist": 0.0})
