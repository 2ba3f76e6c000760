"""Per-drone physical parameters as arrays, so every env (and every drone) can differ.

Domain randomisation and dynamics-shift perturbations write into these arrays; both physics backends read
them on every physics step (the PyBullet backend pushes changed masses and inertias into its bodies before
the step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim2real.envs.drones.models import DroneModel


@dataclass
class DroneParams:
    """Physical parameters, each an array with leading shape ``[num_envs, num_drones]``.

    Attributes (units): ``mass`` [kg]; ``inertia`` ``[..., 3]`` diagonal [kg m^2]; ``kf`` ``[..., 4]`` per
    motor [N/RPM^2]; ``km`` ``[..., 4]`` [N m/RPM^2]; ``arm`` [m]; ``motor_tau`` first-order motor time
    constant [s] (used only when motor lag is on); ``drag_xy``, ``drag_z`` [N s/m per rad/s of summed rotor
    speed]; ``gnd_coeff`` ground-effect coefficient; ``prop_radius`` [m]; ``dw_coeff`` ``[..., 3]`` downwash
    fit (c1, c2, c3); ``ext_force`` ``[..., 3]`` external world-frame force such as wind [N].
    """

    frame: str
    mass: np.ndarray
    inertia: np.ndarray
    kf: np.ndarray
    km: np.ndarray
    arm: np.ndarray
    motor_tau: np.ndarray
    drag_xy: np.ndarray
    drag_z: np.ndarray
    gnd_coeff: np.ndarray
    prop_radius: np.ndarray
    dw_coeff: np.ndarray
    ext_force: np.ndarray

    @classmethod
    def from_model(cls, model: DroneModel, num_envs: int, num_drones: int) -> DroneParams:
        """Nominal parameters of ``model`` broadcast to ``[num_envs, num_drones]``."""
        shape = (num_envs, num_drones)

        def full(value: float | tuple[float, ...]) -> np.ndarray:
            v = np.asarray(value, dtype=np.float64)
            return np.broadcast_to(v, shape + v.shape).copy()

        return cls(
            frame=model.frame,
            mass=full(model.mass),
            inertia=full(model.inertia),
            kf=full((model.kf,) * 4),
            km=full((model.km,) * 4),
            arm=full(model.arm),
            motor_tau=full(model.motor_time_constant),
            drag_xy=full(model.drag_coeff_xy),
            drag_z=full(model.drag_coeff_z),
            gnd_coeff=full(model.gnd_eff_coeff),
            prop_radius=full(model.prop_radius),
            dw_coeff=full(model.dw_coeff),
            ext_force=full((0.0, 0.0, 0.0)),
        )

    @property
    def gnd_h_clip(self) -> np.ndarray:
        """Ground-effect clipping height ``[E, N]`` [m]: 0.25 r_p sqrt(15 C / 4)."""
        return 0.25 * self.prop_radius * np.sqrt(15.0 * self.gnd_coeff / 4.0)

    @property
    def dw_min_gap(self) -> np.ndarray:
        """Vertical gap floor ``[E, N]`` [m] of the downwash model: where its width c2 dz + c3 equals r_p."""
        return (self.prop_radius - self.dw_coeff[..., 2]) / self.dw_coeff[..., 1]
