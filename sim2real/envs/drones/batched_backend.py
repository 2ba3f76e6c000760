"""Batched rigid-body dynamics in numpy: the fast training twin of the PyBullet backend.

All ``[num_envs, num_drones]`` drones advance together with array operations (no Python loop over drones
or envs). With no effects and no damping the update is exactly the anchor's explicit dynamics (its
``DYN`` mode):

    a       = (R [0, 0, sum f_i] + F_ext) / m - [0, 0, g]
    w_dot   = J^-1 (tau - w x J w)                     (body rates w, gyroscopic term included)
    v      <- v + dt a ;   w <- w + dt w_dot ;   p <- p + dt v
    q      <- q ⊗ exp(w dt / 2)                        (exact quaternion exponential, new w)

``damping`` adds PyBullet's multibody damping, F = -m v (d + d|v|) and tau = -J w (d + d|w|), so the
anchor's damped PYB modes can be reproduced. A ground plane at z = 0 stops the collision cylinder
(inelastic in the normal direction, Coulomb friction mu = 0.5 tangentially, body rates damped while
touching); drone-drone contacts are detected between collision cylinders but not resolved.
"""

from __future__ import annotations

import numpy as np

from sim2real.envs.drones.backend import Contacts, DroneBackend
from sim2real.envs.drones.forces import rotor_wrench
from sim2real.envs.drones.models import G
from sim2real.envs.drones.pairs import pair_offsets, sum_over_others
from sim2real.envs.drones.rotations import cross, norm3, quat_integrate_body_rates, quat_to_matrix

GROUND_FRICTION = 0.5
"""Coulomb friction coefficient of the ground contact (PyBullet's default lateral friction)."""
GROUND_SPIN_DECAY = 0.5
"""Fraction of body rate kept per physics step while touching the ground."""


class BatchedBackend(DroneBackend):
    """Numpy drone dynamics for ``[num_envs, num_drones]`` drones (see :class:`DroneBackend`)."""

    name = "batched"

    def _write_state(self, env_ids: np.ndarray) -> None:
        """The state arrays are the engine: nothing to copy."""

    def _physics_step(self) -> Contacts:
        p = self.params
        dt = self.dt
        rot = quat_to_matrix(self.quat)
        vel_before = self.vel
        force, torque = rotor_wrench(p, self.pos, rot, self.vel, self.rpm, self.effects)
        w = self.ang_vel_body
        jw = p.inertia * w
        if self.damping > 0.0:
            d = self.damping
            speed = norm3(self.vel)[..., None]
            force = force - p.mass[..., None] * self.vel * (d + d * speed)
            spin = norm3(w)[..., None]
            torque = torque - jw * (d + d * spin)
        acc = force / p.mass[..., None]
        acc[..., 2] -= G
        w_dot = (torque - cross(w, jw)) / p.inertia
        vel = self.vel + dt * acc
        w = w + dt * w_dot
        pos = self.pos + dt * vel
        quat = quat_integrate_body_rates(self.quat, w, dt)
        ground, impact = self._ground_contact(pos, quat, vel, w, vel_before)
        self.pos, self.vel, self.ang_vel_body, self.quat = pos, vel, w, quat
        return Contacts(ground=ground, drones=self._drone_contacts(), impact_speed=impact)

    def _ground_contact(
        self, pos: np.ndarray, quat: np.ndarray, vel: np.ndarray, w: np.ndarray, vel_before: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resolve ground penetration in place; return the contact mask and impact speeds ``[E, N]``."""
        half_h = 0.5 * self.model.collision_height
        reach = np.hypot(half_h, self.model.collision_radius)  # farthest cylinder point from the centre
        if np.all(pos[..., 2] > reach):
            return np.zeros(pos.shape[:-1], dtype=bool), np.zeros(pos.shape[:-1])
        rot_zz = 1.0 - 2.0 * (quat[..., 0] ** 2 + quat[..., 1] ** 2)
        # Lowest point of the tilted collision cylinder.
        lowest = (
            pos[..., 2]
            - half_h * np.abs(rot_zz)
            - self.model.collision_radius * np.sqrt(np.clip(1.0 - rot_zz * rot_zz, 0.0, 1.0))
        )
        touching = lowest <= 1e-9
        if not np.any(touching):
            return touching, np.zeros_like(lowest)
        pos[..., 2] -= np.where(touching, np.minimum(lowest, 0.0), 0.0)
        vel[..., 2] = np.where(touching, np.maximum(vel[..., 2], 0.0), vel[..., 2])
        v_xy = vel[..., :2]
        speed_xy = np.sqrt(v_xy[..., 0:1] ** 2 + v_xy[..., 1:2] ** 2)
        slow = np.clip(1.0 - GROUND_FRICTION * G * self.dt / np.maximum(speed_xy, 1e-12), 0.0, 1.0)
        vel[..., :2] = np.where(touching[..., None], v_xy * slow, v_xy)
        w *= np.where(touching, GROUND_SPIN_DECAY, 1.0)[..., None]
        impact = np.where(touching, np.maximum(-vel_before[..., 2], 0.0), 0.0)
        return touching, impact

    def _drone_contacts(self) -> np.ndarray:
        """Drones whose collision cylinders (axis-aligned approximation) overlap another's ``[E, N]``."""
        if self.num_drones < 2:
            return np.zeros((self.num_envs, self.num_drones), dtype=bool)
        dx, dy, dz = pair_offsets(self.pos)
        overlap = (dx * dx + dy * dy < (2.0 * self.model.collision_radius) ** 2) & (
            np.abs(dz) < self.model.collision_height
        )
        return sum_over_others(overlap.astype(np.float64)) > 0
