"""Observation, action, timing and malicious-agent perturbations: statistics and exact behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.envs import make
from sim2real.perturb import Context, Pipeline, apply
from sim2real.perturb.base import layout_from

LAYOUT = {"pos": 3, "vel": 3, "gyro": 2}  # 8 columns; names double as sensor names


def pipeline(spec: str, num_envs: int = 1, num_agents: int = 1, act_dim: int = 2, seed: int = 0) -> Pipeline:
    ctx = Context(num_envs=num_envs, num_agents=num_agents, obs_layout=layout_from(LAYOUT), act_dim=act_dim, dt=0.1)
    return Pipeline(spec, ctx, seed)


def run_obs(p: Pipeline, xs: np.ndarray) -> np.ndarray:
    """Feed a sequence ``xs [T, E, N, D]`` through the observation stages of one episode."""
    return np.stack([p.observations(x, np.full(x.shape[0], t), t) for t, x in enumerate(xs)])


def ramp_sequence(steps: int, num_envs: int = 1, num_agents: int = 1) -> np.ndarray:
    """``x_t = t`` in every column, so a delivered value tells its send step."""
    return np.broadcast_to(
        np.arange(steps, dtype=np.float32)[:, None, None, None], (steps, num_envs, num_agents, 8)
    ).copy()


def test_gaussian_noise_hits_only_chosen_fields_and_agents_with_the_right_std():
    env = make("drone-hover", num_envs=256, num_drones=4)
    penv = apply(env, "obs.gaussian(std=0.05,fields=pos,agents=[1,3])", seed=3)
    obs, info = penv.reset()
    diffs = []
    for _ in range(5):
        obs, *_, info = penv.step(np.zeros((256, 4, 3), np.float32))
        diffs.append(obs - info["clean_obs"])
    d = np.stack(diffs)
    position_cols = np.zeros(env.obs_dim, bool)
    for name in ("rel_target", "altitude", "nbr_rel_pos"):
        position_cols[env.obs_field(name)] = True
    assert np.all(d[:, :, [0, 2]] == 0.0), "agents 0 and 2 must be untouched"
    assert np.all(d[..., ~position_cols] == 0.0), "only position fields may change"
    hit = d[:, :, [1, 3]][..., position_cols]
    assert abs(hit.std() - 0.05) < 0.05 * 0.03
    assert abs(hit.mean()) < 0.002
    env.close()


def test_bias_uniform_and_drift_statistics():
    xs = np.zeros((200, 500, 1, 8), np.float32)
    out = run_obs(pipeline("obs.bias(value=[0.1,-0.2,0.3],fields=pos)", 500), xs)
    assert np.allclose(out[..., :3], [0.1, -0.2, 0.3]) and np.all(out[..., 3:] == 0)
    out = run_obs(pipeline("obs.uniform(bound=0.2,fields=vel)", 500), xs)
    assert out[..., 3:6].min() >= -0.2 and out[..., 3:6].max() <= 0.2
    assert abs(out[..., 3:6].std() - 0.2 / np.sqrt(3)) < 0.002
    out = run_obs(pipeline("obs.drift(std=0.01,fields=gyro)", 500), xs)
    # a random walk: variance grows linearly, std after t steps is 0.01 sqrt(t)
    assert abs(out[99, ..., 6:].std() - 0.01 * np.sqrt(100)) < 0.01 * np.sqrt(100) * 0.05
    assert abs(out[199, ..., 6:].std() - 0.01 * np.sqrt(200)) < 0.01 * np.sqrt(200) * 0.05


def test_delay_is_exact_and_starts_from_the_first_value():
    out = run_obs(pipeline("obs.delay(steps=3,fields=vel)"), ramp_sequence(12))
    t = np.arange(12)
    assert np.array_equal(out[:, 0, 0, 3], np.maximum(t - 3, 0))
    assert np.array_equal(out[:, 0, 0, 0], t)  # other fields on time


def test_timing_latency_is_exact_and_rate_holds():
    out = run_obs(pipeline("timing.latency(steps=2)"), ramp_sequence(10))
    assert np.array_equal(out[:, 0, 0, 0], np.maximum(np.arange(10) - 2, 0))
    out = run_obs(pipeline("timing.rate(divisor=3)"), ramp_sequence(10))
    assert np.array_equal(out[:, 0, 0, 5], [0, 0, 0, 3, 3, 3, 6, 6, 6, 9])


def test_jitter_never_goes_back_in_time_and_stays_within_max():
    out = run_obs(pipeline("timing.jitter(max_steps=3)", 200), ramp_sequence(60, 200))[..., 0, 0]
    t = np.arange(60)[:, None]
    age = t - out
    assert age.min() >= 0 and age[3:].max() <= 3
    assert np.all(np.diff(out, axis=0) >= 0), "a keep-last receiver never delivers an older message"
    assert 0.5 < age[3:].mean() < 1.5


@pytest.mark.parametrize(("rate", "burst"), [(0.1, 1.0), (0.2, 4.0)])
def test_loss_rate_and_burst_length(rate, burst):
    p = pipeline(f"timing.loss(rate={rate},burst={burst})", 400)
    out = run_obs(p, ramp_sequence(300, 400))[..., 0, 0]
    lost = out[1:] != np.arange(1, 300)[:, None]  # held an older message
    assert abs(lost.mean() - rate) < 0.01
    starts = (lost[1:] & ~lost[:-1]).sum()
    expected = burst if burst > 1 else 1.0 / (1.0 - rate)  # independent losses still make short runs
    assert abs(lost[1:].sum() / starts - expected) < 0.1 * expected


@pytest.mark.parametrize("mode", ["hold", "zero"])
def test_dropout_rate_and_fill(mode):
    p = pipeline(f"obs.dropout(rate=0.2,mode={mode},fields=pos)", 300)
    xs = ramp_sequence(100, 300) + 1.0
    out = run_obs(p, xs)
    dropped = out[1:, ..., 0] != xs[1:, ..., 0]
    assert abs(dropped.mean() - 0.2) < 0.01
    assert np.all(out[..., 3:] == xs[..., 3:])
    held = out[1:, ..., 0][dropped]
    assert np.all(held == 0.0) if mode == "zero" else np.all(held < xs[1:, ..., 0][dropped])
    counts = p.log.counts()["0:obs.dropout"]["events"]
    assert counts == dropped.sum()


def test_quantize_spike_and_clip():
    xs = np.random.default_rng(0).normal(size=(50, 100, 1, 8)).astype(np.float32)
    out = run_obs(pipeline("obs.quantize(step=0.25)"), xs[:, :1])
    assert np.allclose(out / 0.25, np.round(out / 0.25)) and np.abs(out - xs[:, :1]).max() <= 0.125 + 1e-6
    out = run_obs(pipeline("obs.spike(rate=0.05,magnitude=10)", 100), xs)
    spikes = np.abs(out - xs) > 5
    assert abs(spikes.mean() - 0.05) < 0.005
    assert np.allclose(np.abs((out - xs)[spikes]), 10, atol=1e-4)
    out = run_obs(pipeline("obs.clip(low=-0.5,high=0.5,fields=vel)", 100), xs)
    assert out[..., 3:6].max() <= 0.5 and out[..., 3:6].min() >= -0.5 and np.all(out[..., :3] == xs[..., :3])


def test_same_seed_same_perturbation_other_seed_differs():
    spec = "obs.gaussian(std=0.1)+timing.loss(rate=0.2)+obs.dropout(rate=0.1)"
    xs = ramp_sequence(30, 8, 3)
    a = run_obs(pipeline(spec, 8, 3, seed=5), xs)
    b = run_obs(pipeline(spec, 8, 3, seed=5), xs)
    c = run_obs(pipeline(spec, 8, 3, seed=6), xs)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_random_k_agents_per_episode_and_schedule():
    p = pipeline("obs.bias(value=1,agents=random:2,start=5,end=8)", 300, 5)
    xs = np.zeros((10, 300, 5, 8), np.float32)
    out = run_obs(p, xs)
    hit = out[..., 0] != 0
    assert not hit[:5].any() and not hit[8:].any()
    assert np.all(hit[5:8].sum(axis=-1) == 2), "exactly 2 agents per env"
    assert np.all(hit[5] == hit[7]), "the same agents for the whole episode"
    first = hit[5].copy()
    p.reset(np.arange(300))
    out = run_obs(p, xs)
    assert not np.array_equal(first, out[6, ..., 0] != 0), "a new episode draws new agents"


def test_episode_probability_ramp_and_switch():
    p = pipeline("obs.bias(value=1,prob=0.3)", 2000)
    out = run_obs(p, np.zeros((1, 2000, 1, 8), np.float32))
    assert abs((out[0, :, 0, 0] != 0).mean() - 0.3) < 0.03
    p = pipeline("obs.bias(value=1,start=2,ramp=4)")
    out = run_obs(p, np.zeros((8, 1, 1, 8), np.float32))
    assert np.allclose(out[:, 0, 0, 0], [0, 0, 0.25, 0.5, 0.75, 1, 1, 1])
    p.set_enabled(False)
    assert np.all(run_obs(p, np.zeros((8, 1, 1, 8), np.float32)) == 0)
    p.set_enabled(True, "0:obs.bias")
    assert run_obs(p, np.zeros((8, 1, 1, 8), np.float32))[-1, 0, 0, 0] == 1


def run_actions(p: Pipeline, acts: np.ndarray) -> np.ndarray:
    return np.stack([p.actions(a, None, np.full(a.shape[0], t), t) for t, a in enumerate(acts)])


def test_action_faults():
    acts = np.full((20, 50, 2, 2), 0.8, np.float32)
    out = run_actions(pipeline("action.stuck(value=-1,dims=[1],agents=[0])", 50, 2), acts)
    assert np.all(out[..., 0, 1] == -1) and np.all(out[..., 0, 0] == 0.8) and np.all(out[..., 1, :] == 0.8)
    out = run_actions(pipeline("action.scale(factor=0.5)+action.saturate(limit=0.3,dims=[0])", 50, 2), acts)
    assert np.allclose(out[..., 0], 0.3) and np.allclose(out[..., 1], 0.4)
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[:, None, None, None], acts.shape)
    out = run_actions(pipeline("action.delay(steps=2)", 50, 2), ramp)
    assert np.array_equal(out[:, 0, 0, 0], np.r_[0, 0, np.arange(18)]), "zero action until the first command arrives"
    out = run_actions(pipeline("action.noise(std=0.1)", 50, 2), acts)
    assert abs((out - acts).std() - 0.1) < 0.01


@pytest.mark.parametrize("mode", ["random", "frozen", "inverted"])
def test_malicious_rate_and_count(mode):
    p = pipeline(f"agents.malicious(rate=0.05,k=2,mode={mode})", 4000, 5, act_dim=3)
    rng = np.random.default_rng(1)
    acts = rng.uniform(-0.9, 0.9, (3, 4000, 5, 3)).astype(np.float32)
    out = run_actions(p, acts)
    changed = np.any(out != acts, axis=-1)
    per_env = changed.sum(axis=-1)
    events = per_env > 0
    assert abs(events.mean() - 0.05) < 0.01
    assert np.all(per_env[events] == 2)
    if mode == "inverted":
        assert np.allclose(out[changed], -acts[changed])
    if mode == "frozen":  # repeats what it executed the step before
        t, e, a = np.nonzero(changed[1:])
        assert np.allclose(out[1:][t, e, a], out[:-1][t, e, a])
    assert p.log.counts()["0:agents.malicious"]["events"] == changed.sum()


def test_frozen_teammate_repeats_its_command_through_actuator_faults():
    # the frozen command is taken before the actuator stage, so a scaled actuator does not compound it
    p = pipeline("agents.malicious(mode=frozen,rate=1,agents=[0],start=1)+action.scale(factor=0.5)", 1, 2)
    out = run_actions(p, np.full((5, 1, 2, 2), 0.8, np.float32))
    assert np.allclose(out[:, 0, 0, 0], 0.4)


def test_seeds_are_keyed_by_entry_not_position():
    xs = np.zeros((3, 4, 2, 8), np.float32)
    alone = run_obs(pipeline("obs.gaussian(std=1)", 4, 2), xs)
    with_others = run_obs(pipeline("action.noise(std=1)+obs.bias(value=1,fields=gyro)+obs.gaussian(std=1)", 4, 2), xs)
    assert np.array_equal(alone[..., :6], with_others[..., :6])


def test_numbers_in_exponent_notation_are_read():
    from sim2real.perturb import SpecError, parse_spec

    assert parse_spec("obs.gaussian(std=1e-3)").perturbations[0].params["std"] == 1e-3
    with pytest.raises(SpecError, match="expected a finite number"):
        parse_spec("obs.delay(steps=.inf)")


def test_ground_truth_log_records_what_happened():
    p = pipeline("obs.bias(value=0.5,fields=pos,agents=[1],name=gps)", 3, 2)
    run_obs(p, np.zeros((4, 3, 2, 8), np.float32))
    rows = p.log.records()
    assert len(rows) == 12 and {r["agent"] for r in rows} == {1} and {r["name"] for r in rows} == {"gps"}
    assert np.allclose([r["magnitude"] for r in rows], 0.5 * np.sqrt(3))
    assert sorted({r["episode_step"] for r in rows}) == [0, 1, 2, 3]


def test_ground_truth_log_counts_every_hit_beyond_its_capacity():
    spec = "obs.bias(value=0.5,fields=pos,agents=[1],name=gps)+obs.gaussian(std=0.1,name=noise)"
    full = pipeline(spec, 3, 2)
    run_obs(full, np.zeros((100, 3, 2, 8), np.float32))  # more steps than the hits left waiting at once
    for capacity in (0, 5):
        p = pipeline(spec, 3, 2)
        p.log.capacity = capacity
        run_obs(p, np.zeros((100, 3, 2, 8), np.float32))
        assert 0 < len(p.log._pending) < 64  # beyond the rows, hits wait to be counted, 64 calls at most
        p.log.count_pending()
        assert not p.log._pending
        assert p.log.counts() == full.log.counts() and p.log.counts(1) == full.log.counts(1)
        assert len(p.log.records()) == capacity and p.log.dropped == 100 * (3 + 6) - capacity
        assert p.log.records() == full.log.records()[:capacity]
    assert full.log.counts()["gps"]["events"] == 300 and full.log.counts()["noise"]["events"] == 600


def test_the_hit_mask_of_the_default_schedule_follows_resets_and_the_switch():
    p = pipeline("obs.bias(value=1,agents=random:1)", 4, 3)
    bias = p.items[0]
    hit, _ = bias.gate(np.zeros(4), 0)
    assert not hit.flags.writeable and hit.sum(axis=1).tolist() == [1, 1, 1, 1]
    p.set_enabled(False)
    assert not bias.gate(np.zeros(4), 1)[0].any()
    p.set_enabled(True)
    p.reset(np.array([0, 1, 2, 3]))
    again = [bias.gate(np.zeros(4), 2)[0] for _ in range(2)]
    assert again[0] is again[1] and again[0].sum() == 4  # one mask until the next reset or switch
    drawn = {tuple(np.argmax(bias.gate(np.zeros(4), 0)[0], axis=1))}
    for _ in range(10):
        p.reset(np.array([0, 1, 2, 3]))
        drawn.add(tuple(np.argmax(bias.gate(np.zeros(4), 0)[0], axis=1)))
    assert len(drawn) > 1  # each reset draws the agents again


def test_info_reports_clean_observations_and_executed_actions_through_episode_ends():
    env = make("drone-hover", num_envs=2, num_drones=2, episode_len_s=0.1)
    penv = apply(env, "action.scale(factor=2)+obs.bias(value=1)", seed=0)
    penv.reset()
    for _ in range(3):  # 0.1 s at 30 Hz: the third step ends the episodes
        obs, *_, info = penv.step(np.full((2, 2, 3), 0.75, np.float32))
        assert np.all(info["executed_action"] == 1.0), "scaled to 1.5, clipped to 1, also on the last step"
        assert np.allclose(obs - info["clean_obs"], 1.0)
    assert "final_obs" in info and info["done_env"].all()
    env.close()
