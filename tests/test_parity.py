"""Batched backend against PyBullet and against the anchor's explicit-dynamics equations."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HOVER, constant_rpm

from sim2real.envs.drones import CF2P, CF2X, G, make_backend, simulate_rpm, trajectory_gap
from sim2real.envs.drones.control import PIDController

FREQ = 240


def run_both(init_pos, rpm, effects=(), damping=0.0, model="cf2x"):
    init_pos = np.asarray(init_pos, dtype=float)
    rpy = np.zeros_like(init_pos)
    return [
        simulate_rpm(model, init_pos, rpy, rpm, backend=b, effects=effects, damping=damping)
        for b in ("pybullet", "batched")
    ]


def yaw_pulse() -> np.ndarray:
    rpm = constant_rpm(FREQ)
    rpm[: FREQ // 2, 0] *= [1.05, 0.95, 1.05, 0.95]
    return rpm


@pytest.mark.parametrize("effects", [(), ("ground", "drag", "downwash")])
@pytest.mark.parametrize("scenario", ["hover", "yaw_pulse", "downwash_pair"])
def test_gentle_motion_agrees_within_1mm_and_10mrad_over_1s(scenario: str, effects) -> None:
    if scenario == "hover":
        pyb, bat = run_both([[0, 0, 1.0]], constant_rpm(FREQ), effects)
    elif scenario == "yaw_pulse":
        pyb, bat = run_both([[0, 0, 1.0]], yaw_pulse(), effects)
    else:  # the anchor's pair geometry, raised so 1 s of flight stays contact-free
        pyb, bat = run_both([[0, 0, 2.0], [0.05, 0, 3.0]], constant_rpm(FREQ, 2), effects)
    assert not pyb["ground_contact"].any() and not bat["ground_contact"].any()
    dp, da = trajectory_gap(pyb, bat, FREQ)
    assert dp < 1e-3 and da < 0.01, (dp, da)


@pytest.mark.parametrize("model", [CF2X, CF2P])
def test_motor_step_flip_agrees_over_the_first_quarter_second(model) -> None:
    rpm = constant_rpm(FREQ)
    rpm[:, 0, 0] *= 1.05
    pyb, bat = run_both([[0, 0, 20.0]], rpm, model=model)
    dp, da = trajectory_gap(pyb, bat, FREQ // 4)
    assert dp < 1e-3 and da < 0.01, (dp, da)
    # The manoeuvre is aggressive: the body rates reach several rad/s within the window.
    assert np.max(np.abs(pyb["ang_vel_body"][: FREQ // 4 + 1, 0])) > 2.5


def test_damped_modes_agree() -> None:
    pyb, bat = run_both([[0, 0, 1.0]], yaw_pulse(), damping=0.04)
    dp, da = trajectory_gap(pyb, bat, FREQ)
    assert dp < 1e-6 and da < 1e-6


def _anchor_dyn(rpm: np.ndarray, pos0, model=CF2X) -> np.ndarray:
    """The anchor's explicit dynamics (DYN) for one CF2X, written independently from its equations."""
    dt = 1.0 / FREQ
    m, kf, km, arm = model.mass, model.kf, model.km, model.arm
    inertia = np.diag(model.inertia)
    p, v, w = np.array(pos0, dtype=float), np.zeros(3), np.zeros(3)
    q = np.array([0, 0, 0, 1.0])
    out = [p.copy()]
    for r in rpm:
        x, y, z, s = q
        rot = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - s * z), 2 * (x * z + s * y)],
                [2 * (x * y + s * z), 1 - 2 * (x * x + z * z), 2 * (y * z - s * x)],
                [2 * (x * z - s * y), 2 * (y * z + s * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        f = kf * r**2
        acc = (rot @ np.array([0, 0, f.sum()]) - np.array([0, 0, m * G])) / m
        tq = np.array(
            [
                (arm / np.sqrt(2)) * (-f[0] - f[1] + f[2] + f[3]),
                (arm / np.sqrt(2)) * (-f[0] + f[1] + f[2] - f[3]),
                km * (-(r[0] ** 2) + r[1] ** 2 - r[2] ** 2 + r[3] ** 2),
            ]
        )
        w_dot = np.linalg.solve(inertia, tq - np.cross(w, inertia @ w))
        v = v + dt * acc
        w = w + dt * w_dot
        p = p + dt * v
        n = np.linalg.norm(w)
        if n > 1e-8:
            a, b, c = w
            lam = 0.5 * np.array([[0, c, -b, a], [-c, 0, a, b], [b, -a, 0, c], [-a, -b, -c, 0]])
            th = n * dt / 2
            q = (np.eye(4) * np.cos(th) + 2 / n * lam * np.sin(th)) @ q
        out.append(p.copy())
    return np.array(out)


def test_batched_follows_the_anchor_explicit_dynamics_exactly() -> None:
    rng = np.random.default_rng(3)
    rpm = HOVER * rng.uniform(0.9, 1.1, (FREQ // 2, 1, 4))
    ours = simulate_rpm("cf2x", [[0, 0, 30.0]], [[0, 0, 0]], rpm, backend="batched")
    ref = _anchor_dyn(rpm[:, 0], [0, 0, 30.0])
    np.testing.assert_allclose(ours["pos"][:, 0], ref, atol=1e-10)


def test_pid_waypoints_end_within_1cm_on_both_backends() -> None:
    finals = []
    for backend in ("pybullet", "batched"):
        sim = make_backend(backend, "cf2x", 1, 1, effects="all")
        pid = PIDController("cf2x", 1, 1, sim.dt)
        sim.set_state(None, np.array([[[0, 0, CF2X.collision_height / 2]]]), np.array([[[0, 0, 0, 1.0]]]))
        try:
            for wp in ([0, 0, 1.0], [1.0, 0.5, 1.2], [-0.5, 1.0, 0.6], [0, 0, 0.8]):
                target = np.array([[wp]], dtype=float)
                for _ in range(2 * FREQ):
                    sim.step(pid.compute(sim.pos, sim.quat, sim.vel, sim.ang_vel_body, target))
            finals.append(sim.pos[0, 0].copy())
        finally:
            sim.close()
    assert np.linalg.norm(finals[0] - finals[1]) < 0.01
    np.testing.assert_allclose(finals[0], [0, 0, 0.8], atol=0.05)


def test_per_env_parameters_and_subset_reset() -> None:
    sim = make_backend("batched", "cf2x", 3, 2)
    start = np.tile([0, 0, 5.0], (3, 2, 1))
    start[:, 1, 0] = 1.0
    sim.set_state(None, start, np.tile([0, 0, 0, 1.0], (3, 2, 1)))
    sim.params.mass[1] *= 1.2  # env 1 heavier: sinks at hover RPM
    sim.params.ext_force[2, :, 0] = 0.01  # env 2 pushed by wind along +x
    for _ in range(FREQ // 2):
        sim.step(np.full((3, 2, 4), HOVER))
    assert sim.pos[0, 0, 2] == pytest.approx(5.0, abs=1e-9)
    assert sim.pos[1, 0, 2] < 5.0 - 0.1
    assert sim.pos[2, 0, 0] == pytest.approx(0.5 * 0.01 / CF2X.mass * 0.5**2, rel=0.02)  # x = F t^2 / (2 m)
    assert sim.pos[2, 0, 2] == pytest.approx(5.0, abs=1e-9)
    before = sim.pos.copy()
    sim.set_state(np.array([1]), np.zeros((1, 2, 3)) + 1.0, np.tile([0, 0, 0, 1.0], (1, 2, 1)))
    np.testing.assert_array_equal(sim.pos[[0, 2]], before[[0, 2]])
    np.testing.assert_array_equal(sim.pos[1], 1.0)


def test_pybullet_takes_per_env_mass_too() -> None:
    sim = make_backend("pybullet", "cf2x", 2, 1)
    try:
        sim.set_state(None, np.array([[[0, 0, 5.0]], [[0, 0, 5.0]]]), np.tile([0, 0, 0, 1.0], (2, 1, 1)))
        sim.params.mass[1] *= 1.2  # picked up by the next step
        for _ in range(FREQ // 2):
            sim.step(np.full((2, 1, 4), HOVER))
        assert sim.pos[0, 0, 2] == pytest.approx(5.0, abs=1e-9) and sim.pos[1, 0, 2] < 4.9
    finally:
        sim.close()


def test_motor_lag_is_first_order_with_the_set_time_constant() -> None:
    sim = make_backend("batched", "cf2x", 1, 1, motor_lag=True)
    sim.set_state(None, np.array([[[0, 0, 5.0]]]), np.array([[[0, 0, 0, 1.0]]]))
    tau = sim.params.motor_tau[0, 0]
    steps = round(tau * FREQ)
    for _ in range(steps):
        sim.step(np.full((1, 1, 4), HOVER))
    # After one time constant a step response reaches 1 - 1/e of its target.
    assert sim.rpm[0, 0, 0] / HOVER == pytest.approx(1 - np.exp(-steps / FREQ / tau), rel=1e-9)
    assert sim.rpm[0, 0, 0] / HOVER == pytest.approx(1 - np.exp(-1), abs=0.01)
