"""What every drone physics backend offers: state arrays, state writes, one physics step.

State is kept as arrays with leading shape ``[num_envs, num_drones]``: ``pos`` [m], ``quat`` (xyzw),
``vel`` (world, m/s), ``ang_vel_body`` (rad/s), ``rpm`` (actual motor speeds, RPM). Backends are made
through :func:`make_backend`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sim2real.envs.drones.forces import motor_lag_step, parse_effects
from sim2real.envs.drones.models import DroneModel, get_model
from sim2real.envs.drones.params import DroneParams
from sim2real.envs.drones.rotations import quat_to_matrix, rotate

BACKENDS = ("pybullet", "batched")


@dataclass
class Contacts:
    """Contacts seen during one physics step, each ``[E, N]``.

    ``ground``: touching the ground; ``drones``: touching another drone; ``impact_speed``: downward speed
    [m/s] the drone had just before a ground contact of this step (0 without contact).
    """

    ground: np.ndarray
    drones: np.ndarray
    impact_speed: np.ndarray


class DroneBackend(ABC):
    """Base class of the physics backends (``pybullet`` and ``batched``).

    Args:
        model: drone type (name or :class:`DroneModel`).
        num_envs, num_drones: batch shape.
        pyb_freq: physics rate [Hz].
        effects: any of ``"ground"``, ``"drag"``, ``"downwash"``.
        damping: PyBullet's multibody damping coefficient d for both linear and angular motion
            (F = -m v (d + d|v|), tau = -J w (d + d|w|)); 0 disables it, 0.04 is PyBullet's default
            and reproduces the anchor's PYB modes.
        motor_lag: apply first-order motor dynamics with time constants ``params.motor_tau``.
    """

    name = "base"

    def __init__(
        self,
        model: str | DroneModel,
        num_envs: int,
        num_drones: int,
        *,
        pyb_freq: int = 240,
        effects: Iterable[str] | str | None = (),
        damping: float = 0.0,
        motor_lag: bool = False,
    ) -> None:
        if num_envs < 1 or num_drones < 1:
            raise ValueError(f"num_envs and num_drones must be >= 1, got {num_envs} and {num_drones}")
        if pyb_freq < 1:
            raise ValueError(f"pyb_freq must be a positive rate in Hz, got {pyb_freq}")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        self.model = get_model(model)
        self.num_envs = int(num_envs)
        self.num_drones = int(num_drones)
        self.pyb_freq = int(pyb_freq)
        self.dt = 1.0 / self.pyb_freq
        self.effects = parse_effects(effects)
        self.damping = float(damping)
        self.motor_lag = bool(motor_lag)
        self.params = DroneParams.from_model(self.model, self.num_envs, self.num_drones)
        shape = (self.num_envs, self.num_drones)
        # Until the first set_state the drones wait in a line, 0.2 m apart at 1 m height.
        self.pos = np.zeros((*shape, 3))
        self.pos[..., 0] = 0.2 * np.arange(self.num_drones)
        self.pos[..., 2] = 1.0
        self.quat = np.zeros((*shape, 4))
        self.quat[..., 3] = 1.0
        self.vel = np.zeros((*shape, 3))
        self.ang_vel_body = np.zeros((*shape, 3))
        self.rpm = np.zeros((*shape, 4))

    # ----------------------------------------------------------------- derived state
    @property
    def rot(self) -> np.ndarray:
        """Body-to-world rotation matrices ``[E, N, 3, 3]``."""
        return quat_to_matrix(self.quat)

    @property
    def ang_vel_world(self) -> np.ndarray:
        """World-frame angular velocity ``[E, N, 3]`` [rad/s]."""
        return rotate(self.rot, self.ang_vel_body)

    # ----------------------------------------------------------------- interface
    def set_state(
        self,
        env_ids: np.ndarray | None,
        pos: np.ndarray,
        quat: np.ndarray,
        vel: np.ndarray | None = None,
        ang_vel_body: np.ndarray | None = None,
        rpm: np.ndarray | None = None,
    ) -> None:
        """Write the state of the envs ``env_ids`` (all when None); arrays are ``[len(env_ids), N, ...]``.

        ``env_ids`` holds distinct env indices or is a boolean mask over the envs. Velocities default to zero
        and motor speeds to zero (motor lag starts from rest). Everything is validated before anything is
        written.
        """
        ids = self._env_indices(env_ids)
        k = len(ids)
        arrays = {
            "pos": (pos, 3),
            "quat": (quat, 4),
            "vel": (vel, 3),
            "ang_vel_body": (ang_vel_body, 3),
            "rpm": (rpm, 4),
        }
        checked = {}
        for name, (value, size) in arrays.items():
            if value is None:
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (k, self.num_drones, size):
                raise ValueError(
                    f"{name} must have shape {(k, self.num_drones, size)} for {k} env(s), got {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or inf")
            checked[name] = value
        q_norm = np.linalg.norm(checked["quat"], axis=-1, keepdims=True)
        if np.any(q_norm < 1e-9):
            raise ValueError("quat must be non-zero quaternions (x, y, z, w)")
        self.pos[ids] = checked["pos"]
        self.quat[ids] = checked["quat"] / q_norm
        self.vel[ids] = checked.get("vel", 0.0)
        self.ang_vel_body[ids] = checked.get("ang_vel_body", 0.0)
        self.rpm[ids] = checked.get("rpm", 0.0)
        self._write_state(ids)

    def _env_indices(self, env_ids: np.ndarray | None) -> np.ndarray:
        """Validated integer env indices from None (all), indices or a boolean mask."""
        if env_ids is None:
            return np.arange(self.num_envs)
        ids = np.asarray(env_ids)
        if ids.dtype == bool:
            if ids.shape != (self.num_envs,):
                raise ValueError(f"a boolean env mask must have shape ({self.num_envs},), got {ids.shape}")
            return np.nonzero(ids)[0]
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"env_ids must be a 1-D array of integer env indices, got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_envs or len(np.unique(ids)) != ids.size):
            raise ValueError(f"env_ids must be distinct indices in [0, {self.num_envs}), got {ids.tolist()}")
        return ids

    def step(self, rpm_cmd: np.ndarray) -> Contacts:
        """Advance every env by one physics step of ``1/pyb_freq`` s with commanded RPM ``[E, N, 4]``."""
        rpm_cmd = np.asarray(rpm_cmd, dtype=np.float64)
        if rpm_cmd.shape != (self.num_envs, self.num_drones, 4):
            raise ValueError(f"rpm_cmd must have shape {(self.num_envs, self.num_drones, 4)}, got {rpm_cmd.shape}")
        if not np.isfinite(rpm_cmd).all():
            raise ValueError("rpm_cmd contains NaN or inf")
        if self.motor_lag:
            self.rpm = motor_lag_step(self.rpm, rpm_cmd, self.params.motor_tau, self.dt)
        else:
            self.rpm = rpm_cmd.copy()
        return self._physics_step()

    def apply_params(self) -> None:  # noqa: B027 - optional hook
        """Push changed ``params`` into the engine where it keeps its own copy (done before every step)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release engine resources."""

    @abstractmethod
    def _write_state(self, env_ids: np.ndarray) -> None:
        """Copy the state arrays of ``env_ids`` into the engine."""

    @abstractmethod
    def _physics_step(self) -> Contacts:
        """One physics step with ``self.rpm``; updates the state arrays."""

    def __enter__(self) -> DroneBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_backend(backend: str, model: str | DroneModel, num_envs: int, num_drones: int, **kwargs) -> DroneBackend:
    """Build a physics backend by name: ``"pybullet"`` or ``"batched"``."""
    if backend == "pybullet":
        from sim2real.envs.drones.pybullet_backend import PyBulletBackend

        return PyBulletBackend(model, num_envs, num_drones, **kwargs)
    if backend == "batched":
        from sim2real.envs.drones.batched_backend import BatchedBackend

        return BatchedBackend(model, num_envs, num_drones, **kwargs)
    raise ValueError(f"unknown backend {backend!r}: choose one of {list(BACKENDS)}")
