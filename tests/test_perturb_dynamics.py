"""Dynamics shifts reach both physics backends: heavier drones sink, stronger motors roll, wind pushes."""

from __future__ import annotations

import numpy as np
import pytest

from sim2real.envs import make
from sim2real.envs.drones.rotations import quat_to_rpy
from sim2real.perturb import apply


def fly_at_hover_rpm(backend: str, spec: str | None, steps: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position change [m], velocity [m/s] and roll/pitch/yaw [rad] of one drone after open-loop hover RPM."""
    env = make("drone-hover", num_envs=1, num_drones=1, action_type="rpm", backend=backend)
    penv = apply(env, spec, seed=0)
    penv.reset(seed=0)
    start = env.sim.pos[0, 0].copy()
    start_rpy = quat_to_rpy(env.sim.quat)[0, 0]
    for _ in range(steps):
        penv.step(np.zeros((1, 1, 4), np.float32))
    out = env.sim.pos[0, 0] - start, env.sim.vel[0, 0].copy(), quat_to_rpy(env.sim.quat)[0, 0] - start_rpy
    env.close()
    return out


@pytest.mark.parametrize("backend", ["batched", "pybullet"])
def test_heavier_drone_sinks_and_stronger_motors_roll_or_pitch(backend):
    dpos, vel, rpy = fly_at_hover_rpm(backend, None)
    assert np.abs(dpos).max() < 1e-6 and np.abs(rpy[:2]).max() < 1e-6
    dpos, vel, _ = fly_at_hover_rpm(backend, "dynamics.mass(scale=1.2)")
    # at nominal hover thrust a 20% heavier drone accelerates down at g (1 - 1/1.2) = 1.63 m/s^2
    assert vel[2] == pytest.approx(-9.8 * (1 - 1 / 1.2) * 6 / 30, rel=0.02)
    # x forward, y left, z up: the right side rising is a negative roll, the nose rising a negative pitch
    _, _, rpy = fly_at_hover_rpm(backend, "dynamics.thrust(scale=1.05,motors=[0,1])")  # M1, M2: the right side
    assert rpy[0] < -0.05 and abs(rpy[1]) < 0.2 * abs(rpy[0])
    _, _, rpy = fly_at_hover_rpm(backend, "dynamics.thrust(scale=1.05,motors=[0,3])")  # M1, M4: the front
    assert rpy[1] < -0.05 and abs(rpy[0]) < 0.2 * abs(rpy[1])


@pytest.mark.parametrize("backend", ["batched", "pybullet"])
def test_wind_pushes_downwind(backend):
    _, vel, _ = fly_at_hover_rpm(backend, "dynamics.wind(speed=1,heading_deg=90)", steps=15)
    # rotor drag 9.18e-7 N s/m per rad/s times the summed hover rotor speed (~6060 rad/s): ~5.6 mN per m/s
    assert vel[1] == pytest.approx(5.56e-3 / 0.027 * 0.5, rel=0.05)
    assert abs(vel[0]) < 1e-6


def test_domain_randomisation_samples_per_episode_and_drone_and_restores_nominal():
    env = make("drone-hover", num_envs=64, num_drones=4)
    nominal = env.sim.params.mass.copy()
    penv = apply(env, "dynamics.mass(scale=[0.8,1.2],name=dr)", seed=1)
    penv.reset()
    penv.step(np.zeros((64, 4, 3), np.float32))
    ratio = env.sim.params.mass / nominal
    assert ratio.min() >= 0.8 and ratio.max() <= 1.2 and ratio.std() > 0.08
    assert len(np.unique(ratio)) == ratio.size
    penv.reset()
    penv.step(np.zeros((64, 4, 3), np.float32))
    assert not np.allclose(env.sim.params.mass / nominal, ratio), "a new episode draws new masses"
    penv.set_enabled(False, "dr")
    penv.step(np.zeros((64, 4, 3), np.float32))
    assert np.array_equal(env.sim.params.mass, nominal)
    env.close()


def test_shifts_compose_on_selected_agents_and_pushes_last_their_duration():
    env = make("drone-hover", num_envs=2, num_drones=3, action_type="rpm")
    nominal_kf = env.sim.params.kf.copy()
    penv = apply(env, "dynamics.thrust(scale=0.8,motors=[2],agents=[1])+dynamics.thrust(scale=0.5,motors=[2])", seed=0)
    penv.reset()
    penv.step(np.zeros((2, 3, 4), np.float32))
    ratio = env.sim.params.kf / nominal_kf
    assert np.allclose(ratio[:, 1, 2], 0.4) and np.allclose(ratio[:, [0, 2], 2], 0.5)
    assert np.allclose(ratio[..., [0, 1, 3]], 1.0)
    env.close()

    env = make("drone-hover", num_envs=200, num_drones=2)
    penv = apply(env, "dynamics.push(force=0.05,duration=4,rate=0.02)", seed=0)
    penv.reset()
    pushed = []
    for _ in range(40):
        penv.step(np.zeros((200, 2, 3), np.float32))
        pushed.append(np.linalg.norm(env.sim.params.ext_force, axis=-1) > 0)
    pushed = np.stack(pushed)
    assert np.allclose(np.linalg.norm(env.sim.params.ext_force, axis=-1)[pushed[-1]], 0.05)
    starts = (pushed[1:] & ~pushed[:-1]).sum()
    assert abs(pushed[1:].sum() / starts - 4) < 0.3
    env.close()
