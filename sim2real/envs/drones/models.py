"""Quadrotor models: the Crazyflie 2.x in X (CF2X) and plus (CF2P) configurations.

Constants follow the gym-pybullet-drones URDFs (Luis & Le Ny 2016, Förster 2015, Landry 2015), so that
trajectories can be compared with the simulator our users know. Frames and motor order are documented in
``docs/drone-physics.md``:

* body frame: x forward, y left, z up (FLU); world frame: z up, gravity ``-G`` along z;
* motor ``i`` pushes along body +z with ``f_i = kf * rpm_i**2`` [N] at its arm position;
* motors 0 and 2 spin counter-clockwise seen from above (reaction torque ``-km * rpm**2`` about body z),
  motors 1 and 3 clockwise (``+km * rpm**2``); the sign per motor is ``YAW_SIGNS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

G = 9.8
"""Gravitational acceleration [m/s^2], the anchor's value."""

YAW_SIGNS = np.array([-1.0, 1.0, -1.0, 1.0])
"""Sign of each motor's reaction torque about body z (per unit ``km * rpm**2``)."""


@dataclass(frozen=True)
class DroneModel:
    """Physical constants of one quadrotor type.

    Units: kg, m, kg m^2, N/RPM^2 (``kf``), N m/RPM^2 (``km``). ``frame`` is ``"x"`` (motors on the
    diagonals) or ``"plus"`` (motors on the body axes).
    """

    name: str
    frame: str
    mass: float
    arm: float
    inertia: tuple[float, float, float]
    kf: float
    km: float
    thrust2weight: float
    max_speed_kmh: float
    prop_radius: float
    gnd_eff_coeff: float
    drag_coeff_xy: float
    drag_coeff_z: float
    dw_coeff: tuple[float, float, float]
    collision_radius: float = 0.06
    collision_height: float = 0.025
    motor_time_constant: float = 0.072
    """First-order motor lag [s] measured for the Crazyflie 2.x (arXiv 2404.07837); used when lag is on."""
    description: str = field(default="", compare=False)

    # ----------------------------------------------------------------- derived constants
    @property
    def weight(self) -> float:
        """m g [N]."""
        return self.mass * G

    @property
    def hover_rpm(self) -> float:
        """RPM at which the four motors together carry the weight: sqrt(m g / (4 kf))."""
        return math.sqrt(self.weight / (4.0 * self.kf))

    @property
    def max_rpm(self) -> float:
        """sqrt(thrust2weight m g / (4 kf))."""
        return math.sqrt(self.thrust2weight * self.weight / (4.0 * self.kf))

    @property
    def max_thrust(self) -> float:
        """Total thrust at ``max_rpm`` [N]."""
        return 4.0 * self.kf * self.max_rpm**2

    @property
    def max_xy_torque(self) -> float:
        """Largest roll/pitch torque from two motors at full speed [N m]."""
        if self.frame == "x":
            return 2.0 * self.arm * self.kf * self.max_rpm**2 / math.sqrt(2.0)
        return self.arm * self.kf * self.max_rpm**2

    @property
    def max_z_torque(self) -> float:
        """Largest yaw torque [N m]."""
        return 2.0 * self.km * self.max_rpm**2

    @property
    def gnd_eff_h_clip(self) -> float:
        """Height [m] below which the ground-effect model is held constant (caps the boost at 4/15)."""
        return 0.25 * self.prop_radius * math.sqrt(15.0 * self.gnd_eff_coeff / 4.0)

    def prop_positions(self) -> np.ndarray:
        """Motor positions in the body frame, shape ``[4, 3]`` [m]."""
        return self.arm * prop_unit_positions(self.frame)


_S = 1.0 / math.sqrt(2.0)
_PROP_UNIT = {
    "x": np.array([[_S, -_S, 0.0], [-_S, -_S, 0.0], [-_S, _S, 0.0], [_S, _S, 0.0]]),
    "plus": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}
for _unit in _PROP_UNIT.values():
    _unit.flags.writeable = False


def prop_unit_positions(frame: str) -> np.ndarray:
    """Motor positions for an arm length of 1, shape ``[4, 3]`` (read-only).

    X frame: 0 front-right, 1 back-right, 2 back-left, 3 front-left (the Bitcraze M1..M4 order).
    Plus frame: 0 front, 1 left, 2 back, 3 right.
    """
    if frame not in _PROP_UNIT:
        raise ValueError(f"unknown frame {frame!r}: use 'x' or 'plus'")
    return _PROP_UNIT[frame]


_CF2_COMMON = dict(
    mass=0.027,
    arm=0.0397,
    kf=3.16e-10,
    km=7.94e-12,
    thrust2weight=2.25,
    max_speed_kmh=30.0,
    prop_radius=2.31348e-2,
    gnd_eff_coeff=11.36859,
    drag_coeff_xy=9.1785e-7,
    drag_coeff_z=10.311e-7,
    dw_coeff=(2267.18, 0.16, -0.11),
)

CF2X = DroneModel(
    name="cf2x",
    frame="x",
    inertia=(1.4e-5, 1.4e-5, 2.17e-5),
    description="Bitcraze Crazyflie 2.x, X configuration",
    **_CF2_COMMON,
)
CF2P = DroneModel(
    name="cf2p",
    frame="plus",
    inertia=(2.3951e-5, 2.3951e-5, 3.2347e-5),
    description="Bitcraze Crazyflie 2.x, plus configuration",
    **_CF2_COMMON,
)

MODELS: dict[str, DroneModel] = {m.name: m for m in (CF2X, CF2P)}


def get_model(model: str | DroneModel) -> DroneModel:
    """Return a model by name (``"cf2x"``, ``"cf2p"``) or pass a :class:`DroneModel` through."""
    if isinstance(model, DroneModel):
        return model
    key = str(model).lower()
    if key not in MODELS:
        raise ValueError(f"unknown drone model {model!r}: choose one of {sorted(MODELS)}")
    return MODELS[key]
