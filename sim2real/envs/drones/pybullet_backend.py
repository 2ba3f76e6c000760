"""PyBullet physics backend: the high-fidelity "reality" of the drone domain.

One PyBullet DIRECT client per env holds a ground plane and the env's drones. Every physics step the
backend reads the drones' states, computes rotor forces and effects with :func:`rotor_wrench` for all
drones at once, applies them as one world-frame force at the centre of mass and one world-frame torque per
drone, and calls ``stepSimulation``. PyBullet adds gravity, contacts (drone-ground, drone-drone) and, when
``damping > 0``, its multibody damping. Reset writes states; URDFs are loaded once, at construction.
"""

from __future__ import annotations

import numpy as np
import pybullet as pb

from sim2real.envs.drones.backend import Contacts, DroneBackend
from sim2real.envs.drones.forces import rotor_wrench
from sim2real.envs.drones.models import DroneModel, G
from sim2real.envs.drones.rotations import quat_to_matrix, rotate, rotate_inv
from sim2real.envs.drones.urdf import write_urdf

CONTACT_DISTANCE = 1e-4
"""Largest separation [m] of a PyBullet contact point that counts as touching."""
MAX_CLIENTS = 512
"""Envs (PyBullet clients) per process; PyBullet itself allows 1024 clients."""


class PyBulletBackend(DroneBackend):
    """PyBullet worlds for ``num_envs`` envs of ``num_drones`` drones each.

    Takes :class:`DroneBackend`'s arguments, plus ``gui=True`` to show env 0 in a PyBullet window (needs a
    display).
    """

    name = "pybullet"

    def __init__(self, model: str | DroneModel, num_envs: int, num_drones: int, *, gui: bool = False, **kwargs) -> None:
        super().__init__(model, num_envs, num_drones, **kwargs)
        if self.num_envs > MAX_CLIENTS:
            raise ValueError(
                f"the pybullet backend runs one PyBullet client per env, at most {MAX_CLIENTS}; got num_envs="
                f"{self.num_envs}. Use backend='batched' for large batches."
            )
        urdf = str(write_urdf(self.model))
        self.clients: list[int] = []
        self.body_ids: list[list[int]] = []
        self._drone_index: list[dict[int, int]] = []
        for e in range(self.num_envs):
            client = pb.connect(pb.GUI if (gui and e == 0) else pb.DIRECT)
            self.clients.append(client)
            pb.setGravity(0, 0, -G, physicsClientId=client)
            pb.setTimeStep(self.dt, physicsClientId=client)
            plane_shape = pb.createCollisionShape(pb.GEOM_PLANE, physicsClientId=client)
            pb.createMultiBody(0, plane_shape, physicsClientId=client)  # the ground: the only non-drone body
            ids = []
            for i in range(self.num_drones):
                body = pb.loadURDF(
                    urdf,
                    self.pos[e, i].tolist(),
                    flags=pb.URDF_USE_INERTIA_FROM_FILE,
                    physicsClientId=client,
                )
                pb.changeDynamics(
                    body,
                    -1,
                    linearDamping=self.damping,
                    angularDamping=self.damping,
                    activationState=pb.ACTIVATION_STATE_DISABLE_SLEEPING,
                    physicsClientId=client,
                )
                ids.append(body)
            self.body_ids.append(ids)
            self._drone_index.append({b: i for i, b in enumerate(ids)})
        self._applied = self._mass_inertia_bytes()
        self._write_state(np.arange(self.num_envs))

    # ----------------------------------------------------------------- engine sync
    def _check_open(self) -> None:
        if not self.clients:
            raise RuntimeError("this PyBullet backend is closed: make a new env")

    def _write_state(self, env_ids: np.ndarray) -> None:
        self._check_open()
        self._rot = quat_to_matrix(self.quat)
        w_world = rotate(self._rot[env_ids], self.ang_vel_body[env_ids])
        for k, e in enumerate(env_ids):
            c = self.clients[e]
            for i, body in enumerate(self.body_ids[e]):
                pb.resetBasePositionAndOrientation(body, self.pos[e, i], self.quat[e, i], physicsClientId=c)
                pb.resetBaseVelocity(body, self.vel[e, i], w_world[k, i], physicsClientId=c)

    def _read_state(self) -> None:
        w_world = np.empty_like(self.vel)
        for e, c in enumerate(self.clients):
            for i, body in enumerate(self.body_ids[e]):
                p, q = pb.getBasePositionAndOrientation(body, physicsClientId=c)
                v, w = pb.getBaseVelocity(body, physicsClientId=c)
                self.pos[e, i] = p
                self.quat[e, i] = q
                self.vel[e, i] = v
                w_world[e, i] = w
        self._rot = quat_to_matrix(self.quat)
        self.ang_vel_body = rotate_inv(self._rot, w_world)

    def apply_params(self) -> None:
        """Push changed masses and inertias into the PyBullet bodies (called before every physics step; the
        other parameters are read by the force model each step)."""
        if self._mass_inertia_bytes() == self._applied:
            return
        for e, i in np.ndindex(self.num_envs, self.num_drones):
            pb.changeDynamics(
                self.body_ids[e][i],
                -1,
                mass=float(self.params.mass[e, i]),
                localInertiaDiagonal=[float(v) for v in self.params.inertia[e, i]],
                physicsClientId=self.clients[e],
            )
        self._applied = self._mass_inertia_bytes()

    def _mass_inertia_bytes(self) -> bytes:
        """Snapshot of the masses and inertias, cheap to compare (0.2 us against 5 us for array_equal)."""
        return self.params.mass.tobytes() + self.params.inertia.tobytes()

    # ----------------------------------------------------------------- stepping
    def _physics_step(self) -> Contacts:
        self._check_open()
        self.apply_params()
        rot = self._rot
        vel_before = self.vel.copy()
        force, torque_body = rotor_wrench(self.params, self.pos, rot, self.vel, self.rpm, self.effects)
        torque = rotate(rot, torque_body)
        force_l, torque_l, pos_l = force.tolist(), torque.tolist(), self.pos.tolist()
        for e, c in enumerate(self.clients):
            for i, body in enumerate(self.body_ids[e]):
                pb.applyExternalForce(body, -1, force_l[e][i], pos_l[e][i], pb.WORLD_FRAME, physicsClientId=c)
                pb.applyExternalTorque(body, -1, torque_l[e][i], pb.WORLD_FRAME, physicsClientId=c)
            pb.stepSimulation(physicsClientId=c)
        self._read_state()
        return self._contacts(vel_before)

    def _contacts(self, vel_before: np.ndarray) -> Contacts:
        shape = (self.num_envs, self.num_drones)
        ground = np.zeros(shape, dtype=bool)
        drones = np.zeros(shape, dtype=bool)
        for e, c in enumerate(self.clients):
            index = self._drone_index[e]
            for point in pb.getContactPoints(physicsClientId=c):
                if point[8] > CONTACT_DISTANCE:  # within PyBullet's margin but not touching yet
                    continue
                a, b = index.get(point[1]), index.get(point[2])
                if a is not None and b is not None:
                    drones[e, a] = drones[e, b] = True
                elif a is not None:
                    ground[e, a] = True
                elif b is not None:
                    ground[e, b] = True
        impact = np.where(ground, np.maximum(-vel_before[..., 2], 0.0), 0.0) if ground.any() else np.zeros(shape)
        return Contacts(ground=ground, drones=drones, impact_speed=impact)

    def close(self) -> None:
        """Disconnect every PyBullet client (idempotent)."""
        for c in self.clients:
            if pb.isConnected(c):
                pb.disconnect(c)
        self.clients = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pybullet may already be gone
            pass
