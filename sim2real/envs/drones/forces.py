"""Rotor forces and aerodynamic effects, batched over ``[num_envs, num_drones]`` drones.

Both physics backends call :func:`rotor_wrench` on every physics step; the PyBullet backend applies the
result to its bodies, the batched backend integrates it. Gravity and damping are added by the backends.
The equations are in ``docs/drone-physics.md``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sim2real.envs.drones.models import YAW_SIGNS, G, prop_unit_positions
from sim2real.envs.drones.pairs import pair_offsets, pair_source, sum_over_others
from sim2real.envs.drones.params import DroneParams
from sim2real.envs.drones.rotations import rotate, rotate_inv, sum4

EFFECTS = ("ground", "drag", "downwash")
"""Optional aerodynamic effects."""

DOWNWASH_MAX_XY = 10.0
"""Horizontal distance [m] beyond which downwash is ignored (the anchor's cut-off)."""


_THRUST_MIX = {
    frame: np.stack([prop_unit_positions(frame)[:, 1], -prop_unit_positions(frame)[:, 0], np.ones(4)], axis=1)
    for frame in ("x", "plus")
}
"""Per frame, ``[4, 3]``: motor thrusts to (roll torque / arm, pitch torque / arm, total thrust)."""


def parse_effects(effects: Iterable[str] | str | None) -> frozenset[str]:
    """Validate an effects selection: any of ``"ground"``, ``"drag"``, ``"downwash"``, or ``"all"``.

    A string may list several, separated by commas or ``+`` (``"ground,drag"``).
    """
    if effects is None:
        return frozenset()
    if isinstance(effects, str):
        effects = [e for e in effects.replace("+", ",").split(",") if e.strip()]
    chosen = {str(e).strip().lower() for e in effects}
    if "all" in chosen:
        chosen = (chosen - {"all"}) | set(EFFECTS)
    if "none" in chosen:
        chosen.discard("none")
    unknown = sorted(chosen - set(EFFECTS))
    if unknown:
        raise ValueError(f"unknown effect(s) {unknown}: choose from {list(EFFECTS)} or 'all'")
    return frozenset(chosen)


def motor_lag_step(rpm: np.ndarray, rpm_cmd: np.ndarray, tau: np.ndarray, dt: float) -> np.ndarray:
    """Exact discrete step of first-order motor dynamics ``d rpm/dt = (rpm_cmd - rpm) / tau``.

    ``rpm``, ``rpm_cmd``: ``[E, N, 4]``; ``tau``: ``[E, N]`` [s] (``tau <= 0`` means no lag).
    """
    tau = tau[..., None]
    alpha = np.where(tau > 0, -np.expm1(-dt / np.where(tau > 0, tau, 1.0)), 1.0)
    return rpm + alpha * (rpm_cmd - rpm)


def rotor_wrench(
    params: DroneParams,
    pos: np.ndarray,
    rot: np.ndarray,
    vel: np.ndarray,
    rpm: np.ndarray,
    effects: frozenset[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Force and torque produced by the rotors and the enabled effects.

    Args:
        params: per-drone parameters.
        pos: positions ``[E, N, 3]`` [m] (world).
        rot: body-to-world rotations ``[E, N, 3, 3]``.
        vel: world velocities ``[E, N, 3]`` [m/s].
        rpm: motor speeds ``[E, N, 4]`` [RPM].
        effects: subset of :data:`EFFECTS`.

    Returns:
        ``force_world [E, N, 3]`` [N] (without gravity) and ``torque_body [E, N, 3]`` [N m].
    """
    shape = pos.shape[:-1]
    rpm_sq = (rpm * rpm).reshape(-1, 4)
    thrust = params.kf.reshape(-1, 4) * rpm_sq  # [E*N, 4] along body z
    unit = prop_unit_positions(params.frame)  # [4, 3], scaled by the arm length
    downwash = "downwash" in effects and pos.shape[1] > 1
    rotor_thrust = (thrust @ np.ones(4)).reshape(shape) if downwash else None  # before ground effect

    if "ground" in effects:
        # Shi et al. 2019 (Neural Lander) Eq. 15 per propeller, height clipped below (boost <= 4/15).
        arm = params.arm.reshape(-1, 1)
        prop_z = pos[..., 2].reshape(-1, 1) + arm * (rot[..., 2, :2].reshape(-1, 2) @ unit[:, :2].T)
        h = np.maximum(prop_z, params.gnd_h_clip.reshape(-1, 1))
        boost = params.gnd_coeff.reshape(-1, 1) * (params.prop_radius.reshape(-1, 1) / (4.0 * h)) ** 2
        upright = rot[..., 2, 2].reshape(-1, 1) > 0.0  # |roll| and |pitch| below pi/2
        thrust = thrust * (1.0 + np.where(upright, boost, 0.0))

    # Columns: roll torque / arm, pitch torque / arm, total thrust (r x f for f along body z).
    mix = (thrust @ _THRUST_MIX[params.frame]).reshape(*shape, 3)
    torque_body = np.empty((*shape, 3))
    torque_body[..., :2] = mix[..., :2] * params.arm[..., None]
    torque_body[..., 2] = ((params.km.reshape(-1, 4) * rpm_sq) @ YAW_SIGNS).reshape(shape)
    force_world = rot[..., :, 2] * mix[..., 2:3]

    if "drag" in effects:
        # Förster 2015 Eq. 4.2: F_body = -diag(c_xy, c_xy, c_z) (sum_i omega_i) v_body, omega in rad/s.
        omega_sum = sum4(rpm) * (2.0 * np.pi / 60.0)
        f_drag_body = rotate_inv(rot, vel) * (-omega_sum)[..., None]
        f_drag_body[..., :2] *= params.drag_xy[..., None]
        f_drag_body[..., 2] *= params.drag_z
        force_world += rotate(rot, f_drag_body)

    if downwash:
        force_world[..., 2] += downwash_force_z(params, pos, rotor_thrust / (params.mass * G))

    if params.ext_force.any():
        force_world += params.ext_force
    return force_world, torque_body


def downwash_force_z(params: DroneParams, pos: np.ndarray, thrust_to_weight: np.ndarray | None = None) -> np.ndarray:
    """World-z downwash force ``[E, N]`` [N] on each drone from every drone above it.

    The DSL fit ``F = -c1 (r_p / (4 dz))^2 exp(-0.5 (d_xy / (c2 dz + c3))^2)`` is singular at dz -> 0 and
    its width turns negative below dz = -c3/c2. We evaluate it at ``max(dz, dz_min)``, with ``dz_min`` the gap
    at which the width equals one rotor radius (0.83 m for the Crazyflie), so the force stays finite (at most
    0.11 N on a CF2X at hover, 41 % of its weight) and the width stays positive. Coefficients of the drone
    below apply; pairs more than 10 m apart horizontally are ignored.

    The fit was identified with the upper drone hovering. The wake carries the upper drone's thrust, so the
    force is scaled by that drone's rotor thrust over its weight, ``thrust_to_weight [E, N]`` (1 at hover,
    the default; 0 with its motors off).
    """
    dx, dy, dz = pair_offsets(pos)  # [E, i, others]: p_j - p_i
    above = dz > 0.0
    if not above.any():
        return np.zeros(pos.shape[:-1])
    dxy2 = dx * dx + dy * dy
    gap = np.maximum(dz, params.dw_min_gap[..., None])
    beta = params.dw_coeff[..., 1, None] * gap + params.dw_coeff[..., 2, None]
    shape = dxy2 / (beta * beta)
    shape *= -0.5
    np.exp(shape, out=shape)
    shape /= gap * gap
    shape *= above & (dxy2 < DOWNWASH_MAX_XY**2)
    if thrust_to_weight is not None:
        shape *= pair_source(thrust_to_weight)
    return -(params.dw_coeff[..., 0] * params.prop_radius**2 / 16.0) * sum_over_others(shape)
