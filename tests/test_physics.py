"""Physics invariants that hold on both backends (PyBullet and batched)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HOVER, constant_rpm

from sim2real.envs.drones import CF2P, CF2X, G, make_backend, simulate_rpm
from sim2real.envs.drones.forces import downwash_force_z
from sim2real.envs.drones.params import DroneParams

FREQ = 240


def test_hover_rpm_holds_altitude(backend: str) -> None:
    out = simulate_rpm("cf2x", [[0.3, -0.2, 1.0]], [[0, 0, 0]], constant_rpm(2 * FREQ), backend=backend)
    np.testing.assert_allclose(out["pos"][-1, 0], [0.3, -0.2, 1.0], atol=1e-9)
    np.testing.assert_allclose(out["vel"][-1, 0], 0.0, atol=1e-9)


def test_free_fall_matches_g_without_damping(backend: str) -> None:
    steps = FREQ
    out = simulate_rpm("cf2x", [[0, 0, 20.0]], [[0, 0, 0]], np.zeros((steps, 1, 4)), backend=backend)
    n = np.arange(steps + 1)
    dt = 1.0 / FREQ
    # Semi-implicit Euler of z'' = -g: v_n = -g n dt, z_n = z_0 - g dt^2 n (n + 1) / 2.
    np.testing.assert_allclose(out["vel"][:, 0, 2], -G * n * dt, atol=1e-9)
    np.testing.assert_allclose(out["pos"][:, 0, 2], 20.0 - G * dt**2 * n * (n + 1) / 2, atol=1e-9)
    assert out["pos"][-1, 0, 2] == pytest.approx(20.0 - 0.5 * G, abs=G * dt)  # the continuous law


def test_free_fall_with_damping_matches_pybullet_damping_formula(backend: str) -> None:
    d, dt, steps = 0.04, 1.0 / FREQ, 2 * FREQ
    out = simulate_rpm("cf2x", [[0, 0, 50.0]], [[0, 0, 0]], np.zeros((steps, 1, 4)), backend=backend, damping=d)
    v = 0.0
    for _ in range(steps):
        v += dt * (-G - (d + d * abs(v)) * v)
    assert out["vel"][-1, 0, 2] == pytest.approx(v, abs=1e-9)
    assert out["vel"][-1, 0, 2] == pytest.approx(-12.94, abs=0.01)  # measured on the anchor's PYB mode


def test_spin_decays_with_damping_like_the_anchor(backend: str) -> None:
    sim = make_backend(backend, "cf2x", 1, 1, damping=0.04)
    try:
        sim.set_state(
            None, np.array([[[0, 0, 50.0]]]), np.array([[[0, 0, 0, 1.0]]]), ang_vel_body=np.array([[[0, 0, 10.0]]])
        )
        for _ in range(FREQ):
            sim.step(np.zeros((1, 1, 4)))
        assert sim.ang_vel_body[0, 0, 2] == pytest.approx(6.90, abs=0.01)
    finally:
        sim.close()


@pytest.mark.parametrize(
    ("model", "motor", "signs"),
    [
        # Expected sign of (roll rate, pitch rate) when one motor is faster: torque = r x f.
        (CF2X, 0, (-1, -1)),
        (CF2X, 1, (-1, 1)),
        (CF2X, 2, (1, 1)),
        (CF2X, 3, (1, -1)),
        (CF2P, 0, (0, -1)),
        (CF2P, 1, (1, 0)),
        (CF2P, 2, (0, 1)),
        (CF2P, 3, (-1, 0)),
    ],
)
def test_each_motor_tilts_the_drone_the_documented_way(backend: str, model, motor: int, signs) -> None:
    rpm = constant_rpm(12)
    rpm[:, 0, motor] *= 1.05
    out = simulate_rpm(model, [[0, 0, 1.0]], [[0, 0, 0]], rpm, backend=backend)
    w = out["ang_vel_body"][-1, 0]
    for axis, sign in enumerate(signs):
        if sign == 0:  # only gyroscopic coupling with the yaw rate
            assert abs(w[axis]) < 0.01 * np.max(np.abs(w[:2]))
        else:
            assert np.sign(w[axis]) == sign and abs(w[axis]) > 0.1
    # Yaw reaction: motors 0 and 2 turn the body clockwise (negative z), 1 and 3 counter-clockwise.
    assert np.sign(w[2]) == (-1 if motor in (0, 2) else 1)
    # Total thrust grew: the drone climbs.
    assert out["vel"][-1, 0, 2] > 0


def test_yaw_torque_sign_and_size(backend: str) -> None:
    rpm = constant_rpm(24, scale=np.array([0.95, 1.05, 0.95, 1.05]))
    out = simulate_rpm("cf2x", [[0, 0, 1.0]], [[0, 0, 0]], rpm, backend=backend)
    torque = CF2X.km * HOVER**2 * (-(0.95**2) + 1.05**2 - 0.95**2 + 1.05**2)
    expected_rate = torque / CF2X.inertia[2] * 24 / FREQ
    assert out["ang_vel_body"][-1, 0, 2] == pytest.approx(expected_rate, rel=1e-6)
    np.testing.assert_allclose(out["ang_vel_body"][-1, 0, :2], 0.0, atol=1e-9)


def test_ground_contact_stops_a_fall(backend: str) -> None:
    out = simulate_rpm("cf2x", [[0, 0, 1.0]], [[0, 0, 0]], np.zeros((2 * FREQ, 1, 4)), backend=backend)
    half_height = CF2X.collision_height / 2
    assert out["ground_contact"].any()
    assert out["pos"][-1, 0, 2] == pytest.approx(half_height, abs=2e-3)
    # Never through the floor. PyBullet detects contacts discretely: a 4.4 m/s impact (18 mm per step)
    # penetrates ~3 cm for two steps before the solver pushes the body out (docs/drone-physics.md).
    floor = half_height - 1e-9 if backend == "batched" else -0.03
    assert np.all(out["pos"][:, 0, 2] > floor)
    assert np.linalg.norm(out["vel"][-1, 0]) < 0.05


def test_two_drones_flown_into_each_other_collide(backend: str) -> None:
    sim = make_backend(backend, "cf2x", 1, 2)
    try:
        sim.set_state(
            None,
            np.array([[[-0.3, 0, 1.0], [0.3, 0, 1.0]]]),
            np.tile([0, 0, 0, 1.0], (1, 2, 1)),
            vel=np.array([[[1.0, 0, 0], [-1.0, 0, 0]]]),
        )
        hit = np.zeros(2, dtype=bool)
        for _ in range(FREQ // 2):
            hit |= sim.step(np.full((1, 2, 4), HOVER)).drones[0]
        assert hit.all()
        if backend == "pybullet":  # contacts are resolved: the drones bounce apart instead of passing
            assert sim.pos[0, 0, 0] < sim.pos[0, 1, 0]
    finally:
        sim.close()


def test_ground_effect_adds_lift_near_the_ground(backend: str) -> None:
    kw = dict(backend=backend)
    low = simulate_rpm("cf2x", [[0, 0, 0.05]], [[0, 0, 0]], constant_rpm(FREQ // 4), effects="ground", **kw)
    plain = simulate_rpm("cf2x", [[0, 0, 0.05]], [[0, 0, 0]], constant_rpm(FREQ // 4), **kw)
    assert low["pos"][-1, 0, 2] > 0.06
    assert plain["pos"][-1, 0, 2] == pytest.approx(0.05, abs=1e-9)
    # At 1 m with all effects, the anchor's PYB_GND_DRAG_DW hover drifts up 1.7 mm in 1 s.
    high = simulate_rpm("cf2x", [[0, 0, 1.0]], [[0, 0, 0]], constant_rpm(FREQ), effects="all", **kw)
    assert high["pos"][-1, 0, 2] - 1.0 == pytest.approx(1.7e-3, abs=0.1e-3)


def test_drag_slows_horizontal_motion(backend: str) -> None:
    sim = make_backend(backend, "cf2x", 1, 1, effects="drag")
    try:
        sim.set_state(None, np.array([[[0, 0, 5.0]]]), np.array([[[0, 0, 0, 1.0]]]), vel=np.array([[[1.0, 0, 0]]]))
        for _ in range(FREQ):
            sim.step(np.full((1, 1, 4), HOVER))
        # dv/dt = -c_xy (sum omega) v / m  ->  v(1 s) = exp(-0.206) at hover.
        rate = CF2X.drag_coeff_xy * 4 * HOVER * 2 * np.pi / 60 / CF2X.mass
        assert sim.vel[0, 0, 0] == pytest.approx(np.exp(-rate), rel=2e-3)
    finally:
        sim.close()


def test_downwash_pushes_the_lower_drone_down_and_stays_finite(backend: str) -> None:
    start = [[0, 0, 2.0], [0.05, 0, 3.0]]
    out = simulate_rpm("cf2x", start, np.zeros((2, 3)), constant_rpm(FREQ // 2, 2), effects="downwash", backend=backend)
    assert out["pos"][-1, 0, 2] < 2.0 - 0.1  # the lower drone sinks in the upper one's wake
    assert out["pos"][-1, 1, 2] == pytest.approx(3.0, abs=1e-9)  # the upper one feels nothing
    # Zero and tiny vertical gaps: the force is finite, bounded by its value at the gap floor.
    params = DroneParams.from_model(CF2X, 1, 2)
    for gap in (0.0, 1e-9, 1e-3):
        f = downwash_force_z(params, np.array([[[0, 0, 1.0], [0, 0, 1.0 + gap]]]))
        assert np.all(np.isfinite(f)) and abs(f[0, 0]) <= 0.11 and f[0, 1] == 0.0
    # Stacked drones 1 mm apart do not get shot through the floor (the anchor's singularity).
    out = simulate_rpm(
        "cf2x",
        [[0, 0, 1.0], [0.2, 0, 1.001]],
        np.zeros((2, 3)),
        constant_rpm(FREQ // 8, 2),
        effects="downwash",
        backend=backend,
    )
    assert out["pos"][-1, 0, 2] > 0.99


def test_reset_writes_state_without_reloading() -> None:
    sim = make_backend("pybullet", "cf2x", 2, 3)
    try:
        ids = [list(b) for b in sim.body_ids]
        rng = np.random.default_rng(0)
        pos = rng.uniform(0.5, 1.5, (1, 3, 3))
        sim.set_state(np.array([1]), pos, np.tile([0, 0, 0, 1.0], (1, 3, 1)), vel=np.ones((1, 3, 3)))
        assert sim.body_ids == ids
        sim.step(np.full((2, 3, 4), HOVER))
        # The engine really holds the written state: one step of free motion from it.
        np.testing.assert_allclose(sim.pos[1], pos[0] + 1.0 / FREQ, atol=1e-9)
    finally:
        sim.close()


def test_bad_inputs_are_rejected_with_clear_messages() -> None:
    with pytest.raises(ValueError, match="unknown effect"):
        simulate_rpm("cf2x", [[0, 0, 1]], [[0, 0, 0]], constant_rpm(2), effects="wind")
    with pytest.raises(ValueError, match=r"rpm must be \[T, N, 4\]"):
        simulate_rpm("cf2x", [[0, 0, 1]], [[0, 0, 0]], np.ones((2, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        simulate_rpm("cf2x", [[0, 0, 1]], [[0, 0, 0]], -constant_rpm(2))
    with pytest.raises(ValueError, match="unknown backend"):
        simulate_rpm("cf2x", [[0, 0, 1]], [[0, 0, 0]], constant_rpm(2), backend="mujoco")


def test_too_many_pybullet_worlds_are_refused_before_any_is_made() -> None:
    with pytest.raises(ValueError, match="backend='batched'"):
        make_backend("pybullet", "cf2x", 10_000, 1)


def test_state_writes_are_validated() -> None:
    sim = make_backend("batched", "cf2x", 2, 3)
    q = np.tile([0, 0, 0, 1.0], (1, 3, 1))
    with pytest.raises(ValueError, match=r"pos must have shape \(1, 3, 3\)"):
        sim.set_state(np.array([0]), np.zeros((2, 3, 3)), q)
    with pytest.raises(ValueError, match="vel contains NaN"):
        sim.set_state(np.array([0]), np.zeros((1, 3, 3)), q, vel=np.full((1, 3, 3), np.nan))
    with pytest.raises(ValueError, match="non-zero quaternions"):
        sim.set_state(np.array([0]), np.zeros((1, 3, 3)), np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match="rpm_cmd must have shape"):
        sim.step(np.zeros((2, 3)))


def test_env_id_selection_is_validated() -> None:
    sim = make_backend("batched", "cf2x", 3, 1)
    q = np.tile([0, 0, 0, 1.0], (1, 1, 1))
    sim.set_state(np.array([False, True, False]), np.full((1, 1, 3), 2.0), q)  # a mask selects env 1
    assert sim.pos[1, 0, 2] == 2.0 and sim.pos[0, 0, 2] == 1.0
    for bad in (np.array([3]), np.array([0, 0]), np.array([0.5]), np.array([True, False])):
        with pytest.raises(ValueError, match="env"):
            sim.set_state(bad, np.zeros((len(bad), 1, 3)), np.tile(q, (len(bad), 1, 1)))
    with pytest.raises(ValueError, match="NaN"):
        sim.step(np.full((3, 1, 4), np.nan))


def test_skimming_the_ground_is_not_an_impact(backend: str) -> None:
    """Only the downward speed counts as impact speed: fast level flight just above the ground is no crash."""
    sim = make_backend(backend, "cf2x", 1, 1)
    try:
        z = CF2X.collision_height / 2 + 5e-4
        sim.set_state(None, np.array([[[0, 0, z]]]), np.array([[[0, 0, 0, 1.0]]]), vel=np.array([[[2.0, 0, 0]]]))
        impact = max(float(sim.step(np.full((1, 1, 4), HOVER)).impact_speed[0, 0]) for _ in range(10))
        assert impact < 0.05
    finally:
        sim.close()


def test_a_closed_pybullet_backend_refuses_to_step() -> None:
    sim = make_backend("pybullet", "cf2x", 1, 1)
    sim.close()
    with pytest.raises(RuntimeError, match="closed"):
        sim.step(np.full((1, 1, 4), HOVER))


def test_downwash_scales_with_the_upper_drones_thrust(backend: str) -> None:
    start = [[0, 0, 2.0], [0.05, 0, 3.0]]
    rpm = constant_rpm(FREQ // 4, 2)
    rpm[:, 1] = 0.0  # the upper drone's motors are off (it falls 0.3 m): no wake
    out = simulate_rpm("cf2x", start, np.zeros((2, 3)), rpm, effects="downwash", backend=backend)
    assert out["pos"][-1, 0, 2] == pytest.approx(2.0, abs=1e-9)
    params = DroneParams.from_model(CF2X, 1, 2)
    pos = np.array([[[0, 0, 1.0], [0, 0, 2.0]]])
    hover = downwash_force_z(params, pos)
    double = downwash_force_z(params, pos, np.array([[1.0, 2.0]]))
    assert double[0, 0] == pytest.approx(2 * hover[0, 0]) and hover[0, 0] < 0
