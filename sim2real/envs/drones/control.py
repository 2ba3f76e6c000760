"""Cascaded PID position/velocity controller, batched over ``[num_envs, num_drones]``.

The structure and gains are the DSL controller of gym-pybullet-drones (Crazyflie PID in PWM units):

* position stage: ``F = P e_p + I int(e_p) + D e_v + [0, 0, m g]`` with P = (.4, .4, 1.25),
  I = (.05, .05, .05), D = (.2, .2, .5); the integral is clipped to +-2 (z: +-0.15); thrust =
  max(0, F . z_body) converted to PWM by ``(sqrt(T / (4 kf)) - 4070.3) / 0.2685``; the desired body z axis
  is F / |F| and the desired heading the target yaw;
* attitude stage: ``e_R = vee(R_d^T R - R^T R_d)``; torque (PWM units) ``-P e_R + D (w* - w) + I int(-e_R)``
  with P = (7e4, 7e4, 6e4), I = (0, 0, 500), D = (2e4, 2e4, 1.2e4), clipped to +-3200; the integral is
  clipped to +-1500 (roll, pitch: +-1);
* mixer (X or plus), PWM clipped to [20000, 65535], ``RPM = 0.2685 PWM + 4070.3``.

Deliberate deviations: the rate error uses the measured body rates instead of finite differences of Euler
angles (no one-step lag, no wrap-around at yaw = +-pi), and the plus-frame model gets the plus mixer (the
anchor gives CF2P the X mixer). The controller uses the *nominal* model constants: it does not know about
dynamics shifts written into the simulator's parameters, like a real onboard controller.
"""

from __future__ import annotations

import numpy as np

from sim2real.envs.drones.models import DroneModel, G, get_model
from sim2real.envs.drones.rotations import cross, dot3, norm3, quat_to_matrix

PWM2RPM_SCALE = 0.2685
PWM2RPM_CONST = 4070.3
MIN_PWM = 20000.0
MAX_PWM = 65535.0

MIXERS = {
    "x": np.array([[-0.5, -0.5, -1.0], [-0.5, 0.5, 1.0], [0.5, 0.5, -1.0], [0.5, -0.5, 1.0]]),
    "plus": np.array([[0.0, -1.0, -1.0], [1.0, 0.0, 1.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]]),
}


class PIDController:
    """DSL-style cascaded PID for ``[num_envs, num_drones]`` drones; call :meth:`compute` every ``dt`` s."""

    P_FOR = np.array([0.4, 0.4, 1.25])
    I_FOR = np.array([0.05, 0.05, 0.05])
    D_FOR = np.array([0.2, 0.2, 0.5])
    P_TOR = np.array([70000.0, 70000.0, 60000.0])
    I_TOR = np.array([0.0, 0.0, 500.0])
    D_TOR = np.array([20000.0, 20000.0, 12000.0])

    def __init__(self, model: str | DroneModel, num_envs: int, num_drones: int, dt: float) -> None:
        self.model = get_model(model)
        self.dt = float(dt)
        self.mixer = MIXERS[self.model.frame]
        self.int_pos = np.zeros((num_envs, num_drones, 3))
        self.int_rot = np.zeros((num_envs, num_drones, 3))

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        """Clear the integrators of ``env_ids`` (all when None)."""
        ids = slice(None) if env_ids is None else env_ids
        self.int_pos[ids] = 0.0
        self.int_rot[ids] = 0.0

    def compute(
        self,
        pos: np.ndarray,
        quat: np.ndarray,
        vel: np.ndarray,
        ang_vel_body: np.ndarray,
        target_pos: np.ndarray,
        target_vel: np.ndarray | float = 0.0,
        target_yaw: np.ndarray | float = 0.0,
        target_rates: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Motor RPM ``[E, N, 4]`` that drive the drones toward the targets (arrays ``[E, N, 3]``, yaw ``[E, N]``)."""
        dt = self.dt
        rot = quat_to_matrix(quat)
        body_z = rot[..., :, 2]
        # ---- position stage
        pos_e = target_pos - pos
        vel_e = target_vel - vel
        self.int_pos = np.clip(self.int_pos + pos_e * dt, -2.0, 2.0)
        self.int_pos[..., 2] = np.clip(self.int_pos[..., 2], -0.15, 0.15)
        force = self.P_FOR * pos_e + self.I_FOR * self.int_pos + self.D_FOR * vel_e
        force[..., 2] += self.model.mass * G
        thrust = np.maximum(0.0, dot3(force, body_z))
        thrust_pwm = (np.sqrt(thrust / (4.0 * self.model.kf)) - PWM2RPM_CONST) / PWM2RPM_SCALE
        # ---- desired attitude: body z along the force, heading from the target yaw
        f_norm = norm3(force)[..., None]
        z_d = np.where(f_norm > 1e-9, force / np.maximum(f_norm, 1e-9), np.array([0.0, 0.0, 1.0]))
        yaw = np.broadcast_to(np.asarray(target_yaw, dtype=np.float64), pos.shape[:-1])
        x_c = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], axis=-1)
        y_d = cross(z_d, x_c)
        y_d /= np.maximum(norm3(y_d), 1e-9)[..., None]
        x_d = cross(y_d, z_d)
        # ---- attitude stage: e_R = vee(R_d^T R - R^T R_d), R_d = [x_d y_d z_d] (columns)
        r0, r1, r2 = rot[..., :, 0], rot[..., :, 1], body_z
        rot_e = np.stack(
            [dot3(z_d, r1) - dot3(r2, y_d), dot3(x_d, r2) - dot3(r0, z_d), dot3(y_d, r0) - dot3(r1, x_d)], axis=-1
        )
        rate_e = target_rates - ang_vel_body
        self.int_rot = np.clip(self.int_rot - rot_e * dt, -1500.0, 1500.0)
        self.int_rot[..., :2] = np.clip(self.int_rot[..., :2], -1.0, 1.0)
        torque = np.clip(-self.P_TOR * rot_e + self.D_TOR * rate_e + self.I_TOR * self.int_rot, -3200.0, 3200.0)
        mixed = (torque.reshape(-1, 3) @ self.mixer.T).reshape(*pos.shape[:-1], 4)
        pwm = np.clip(thrust_pwm[..., None] + mixed, MIN_PWM, MAX_PWM)
        return PWM2RPM_SCALE * pwm + PWM2RPM_CONST
