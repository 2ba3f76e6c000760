"""A robot's message stream gets exactly the perturbation its agent gets in simulation."""

from __future__ import annotations

import numpy as np

from sim2real.envs import make
from sim2real.perturb import StreamPerturber, apply

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
