"""A robot's message stream gets exactly the perturbation its agent gets in simulation; a swarm's bursts too."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.envs import make
from sim2real.perturb import BurstPerturber, StreamPerturber, apply

SPEC = "obs.gaussian(std=0.1,fields=pos,agents=random:2)+obs.delay(steps=2,fields=vel)+timing.loss(rate=0.3,burst=2)"


def test_stream_matches_the_env_wrapper_message_by_message():
    env = make("drone-hover", num_envs=1, num_drones=3)
    penv = apply(env, SPEC, seed=7)
    obs, info = penv.reset()
    perturbed, clean = [obs[0]], [info["clean_obs"][0]]
    for _ in range(25):
        obs, *_, info = penv.step(np.zeros((1, 3, 3), np.float32))
        perturbed.append(obs[0])
        clean.append(info["clean_obs"][0])
    env_log = penv.log.counts()
    held, stream_hits = 0, dict.fromkeys(env_log, 0)
    for agent in range(3):
        stream = StreamPerturber(SPEC, env.obs_layout, agent=agent, num_agents=3, seed=7)
        counting = StreamPerturber(SPEC, env.obs_layout, agent=agent, num_agents=3, seed=7, log_capacity=0)
        last = None
        for t in range(len(clean)):
            out = stream.observe(clean[t][agent])
            counted = counting.observe(clean[t][agent])
            assert (out is None and counted is None) or np.array_equal(out, counted)  # the log does not steer
            if out is None:  # nothing new arrived: the policy keeps the last message, as in simulation
                held += 1
                np.testing.assert_array_equal(perturbed[t][agent], last)
            else:
                np.testing.assert_array_equal(out, perturbed[t][agent])
                last = out
        for name, count in stream.log.counts().items():  # each stream logs its own robot's hits only
            stream_hits[name] += count["events"]
        assert {record["agent"] for record in stream.log.records()} == {agent}
        assert counting.log.counts() == stream.log.counts() and counting.log.records() == []  # counts, no rows
    assert stream_hits == {name: count["events"] for name, count in env_log.items()}
    assert held > 5
    assert env_log["2:timing.loss"]["events"] >= held
    env.close()


def test_malicious_commands_hit_the_same_robots_on_every_stream():
    spec = "agents.malicious(rate=0.5,k=1,mode=inverted)"
    streams = [StreamPerturber(spec, {"pos": 3}, act_dim=2, agent=i, num_agents=3, seed=1) for i in range(3)]
    inverted = np.zeros((200, 3), bool)
    for t in range(200):
        for i, s in enumerate(streams):
            inverted[t, i] = s.command(np.array([0.5, -0.25]))[0] == -0.5
    assert np.all(inverted.sum(axis=1) <= 1), "k=1: at most one robot per step across all streams"
    assert abs(inverted.any(axis=1).mean() - 0.5) < 0.1


def test_stream_switch_and_reset():
    s = StreamPerturber("obs.bias(value=1,name=b)+timing.rate(divisor=2)", {"pos": 3, "vel": 3}, seed=0)
    assert np.all(s.observe(np.zeros(6)) == 1)
    assert s.observe(np.zeros(6)) is None  # every second message is not sent
    s.set_enabled(False)
    assert np.all(s.observe(np.zeros(6)) == 0) and np.all(s.observe(np.zeros(6)) == 0)
    s.set_enabled(True)
    s.reset()
    assert np.all(s.observe(np.zeros(6)) == 1)


LAYOUT = {"pos": 3, "vel": 3}
STEP_FREE = "obs.gaussian(std=0.1,fields=pos,agents=random:2)+obs.bias(value=0.5,fields=vel)+obs.clip(low=-2,high=2)"


def test_a_step_free_spec_perturbs_a_whole_burst_in_one_swarm_call_with_each_robots_own_values():
    rng = np.random.default_rng(0)
    burst = BurstPerturber(STEP_FREE, LAYOUT, num_agents=4, seed=5, log_capacity=0)
    streams = [StreamPerturber(STEP_FREE, LAYOUT, agent=i, num_agents=4, seed=5) for i in range(4)]
    assert burst.swarm and not burst.streams
    for t in range(30):  # complete bursts, in order or not: exactly each robot's own stream
        order = rng.permutation(4).tolist() if t % 2 else [0, 1, 2, 3]
        messages = rng.normal(size=(4, 6))
        outs = burst.observe(order, messages)
        for robot, message, out in zip(order, messages, outs, strict=True):
            np.testing.assert_array_equal(out, streams[robot].observe(message))
    assert burst.obs_bursts == 30  # one pipeline call per burst
    for robot in range(4):
        assert burst.counts(robot) == streams[robot].log.counts()
    noisy = [robot for robot in range(4) if "0:obs.gaussian" in burst.counts(robot)]
    assert len(noisy) == 2  # random:2 picks the same two robots as the streams do

    before = {robot: burst.counts(robot)["1:obs.bias"]["events"] for robot in range(4)}
    outs = burst.observe([1, 3, 1], np.zeros((3, 6)))  # robot 1 twice: its messages in order, in two calls
    assert burst.obs_bursts == 32
    for out in outs:
        np.testing.assert_array_equal(out[3:], 0.5)  # the bias on every message
    after = {robot: burst.counts(robot)["1:obs.bias"]["events"] for robot in range(4)}
    assert [after[r] - before[r] for r in range(4)] == [0, 2, 0, 1]  # only the robots the burst carried count


@pytest.mark.parametrize(
    "spec",
    [
        "obs.dropout(rate=0.3)",  # holds the last value: memory
        "obs.gaussian(std=0.1)+obs.delay(steps=2,fields=vel)",
        "obs.gaussian(std=0.1,start=5)",  # the schedule counts each robot's messages
        "timing.loss(rate=0.3,burst=2)",
    ],
)
def test_other_specs_step_each_robots_own_stream_even_in_partial_bursts(spec: str):
    rng = np.random.default_rng(1)
    burst = BurstPerturber(spec, LAYOUT, num_agents=3, seed=2)
    streams = [StreamPerturber(spec, LAYOUT, agent=i, num_agents=3, seed=2) for i in range(3)]
    assert not burst.swarm and len(burst.streams) == 3
    for _ in range(40):
        robots = rng.choice(3, size=rng.integers(1, 4), replace=False).tolist()  # some robots' messages are late
        messages = rng.normal(size=(len(robots), 6))
        for robot, message, out in zip(robots, messages, burst.observe(robots, messages), strict=True):
            expected = streams[robot].observe(message)
            assert (out is None and expected is None) or np.array_equal(out, expected)
    for robot in range(3):
        assert burst.counts(robot) == streams[robot].log.counts()


def test_burst_switch_and_bad_input():
    burst = BurstPerturber("action.scale(factor=0.5)", {"pos": 3}, act_dim=2, num_agents=2, seed=0)
    assert burst.swarm
    np.testing.assert_allclose(burst.command([0, 1], np.ones((2, 2))), 0.5)
    burst.set_enabled(False)
    np.testing.assert_allclose(burst.command([1], np.ones((1, 2))), 1.0)
    with pytest.raises(ValueError, match="outside the swarm of 2"):
        burst.command([2], np.ones((1, 2)))
    streams = BurstPerturber("action.delay(steps=1)", {"pos": 3}, act_dim=2, num_agents=2, seed=0)
    assert not streams.swarm
    with pytest.raises(ValueError, match="outside the swarm of 2"):
        streams.command([-1], np.ones((1, 2)))  # not the last robot's stream
    with pytest.raises(ValueError, match=r"shape \(1, 3\), expected \(1, 2\)"):
        burst.command([0], np.ones((1, 3)))
