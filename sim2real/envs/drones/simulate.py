"""Deterministic open-loop simulation for physics checks and comparisons with other simulators."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sim2real.envs.drones.backend import make_backend
from sim2real.envs.drones.models import DroneModel
from sim2real.envs.drones.rotations import quat_to_rpy, rpy_to_quat


def simulate_rpm(
    model: str | DroneModel,
    init_pos: np.ndarray,
    init_rpy: np.ndarray,
    rpm: np.ndarray,
    *,
    pyb_freq: int = 240,
    backend: str = "pybullet",
    effects: Iterable[str] | str | None = (),
    damping: float = 0.0,
    motor_lag: bool = False,
) -> dict[str, np.ndarray]:
    """Fly ``N`` drones open loop through an RPM schedule, starting at rest.

    Args:
        model: ``"cf2x"``, ``"cf2p"`` or a :class:`DroneModel`.
        init_pos: ``[N, 3]`` initial positions [m].
        init_rpy: ``[N, 3]`` initial roll, pitch, yaw [rad].
        rpm: ``[T, N, 4]`` motor speeds [RPM]; row ``t`` is held for one physics step.
        pyb_freq: physics rate [Hz].
        backend: ``"pybullet"`` or ``"batched"``.
        effects: any of ``"ground"``, ``"drag"``, ``"downwash"``.
        damping: PyBullet damping coefficient (0: none; 0.04: the anchor's PYB modes).
        motor_lag: first-order motor dynamics (model's time constant).

    Returns:
        ``t [T+1]`` [s], ``pos [T+1, N, 3]``, ``quat_xyzw [T+1, N, 4]``, ``vel [T+1, N, 3]`` (world),
        ``ang_vel_world [T+1, N, 3]``, ``ang_vel_body [T+1, N, 3]``, ``ground_contact [T+1, N]``,
        ``drone_contact [T+1, N]``; row 0 is the initial state.
    """
    init_pos = np.asarray(init_pos, dtype=np.float64)
    init_rpy = np.asarray(init_rpy, dtype=np.float64)
    rpm = np.asarray(rpm, dtype=np.float64)
    if init_pos.ndim != 2 or init_pos.shape[1] != 3:
        raise ValueError(f"init_pos must be [N, 3], got shape {init_pos.shape}")
    n = init_pos.shape[0]
    if init_rpy.shape != (n, 3):
        raise ValueError(f"init_rpy must be [N, 3] = {(n, 3)}, got shape {init_rpy.shape}")
    if rpm.ndim != 3 or rpm.shape[1:] != (n, 4):
        raise ValueError(f"rpm must be [T, N, 4] with N = {n}, got shape {rpm.shape}")
    if not np.all(np.isfinite(rpm)) or np.any(rpm < 0):
        raise ValueError("rpm must be finite and non-negative")
    steps = rpm.shape[0]
    sim = make_backend(backend, model, 1, n, pyb_freq=pyb_freq, effects=effects, damping=damping, motor_lag=motor_lag)
    try:
        sim.set_state(None, init_pos[None], rpy_to_quat(init_rpy)[None])
        out = {
            "pos": np.empty((steps + 1, n, 3)),
            "quat_xyzw": np.empty((steps + 1, n, 4)),
            "vel": np.empty((steps + 1, n, 3)),
            "ang_vel_world": np.empty((steps + 1, n, 3)),
            "ang_vel_body": np.empty((steps + 1, n, 3)),
            "ground_contact": np.zeros((steps + 1, n), dtype=bool),
            "drone_contact": np.zeros((steps + 1, n), dtype=bool),
        }

        def record(k: int) -> None:
            out["pos"][k] = sim.pos[0]
            out["quat_xyzw"][k] = sim.quat[0]
            out["vel"][k] = sim.vel[0]
            out["ang_vel_world"][k] = sim.ang_vel_world[0]
            out["ang_vel_body"][k] = sim.ang_vel_body[0]

        record(0)
        for k in range(steps):
            contacts = sim.step(rpm[k][None])
            record(k + 1)
            out["ground_contact"][k + 1] = contacts.ground[0]
            out["drone_contact"][k + 1] = contacts.drones[0]
        out["t"] = np.arange(steps + 1) / pyb_freq
        return out
    finally:
        sim.close()


def trajectory_gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray], upto: int) -> tuple[float, float]:
    """Largest position [m] and roll/pitch/yaw [rad] difference between two :func:`simulate_rpm` results
    over rows ``0..upto`` (angles compared on the circle)."""
    dp = np.max(np.abs(a["pos"][: upto + 1] - b["pos"][: upto + 1]))
    ra, rb = quat_to_rpy(a["quat_xyzw"][: upto + 1]), quat_to_rpy(b["quat_xyzw"][: upto + 1])
    return float(dp), float(np.max(np.abs(np.angle(np.exp(1j * (ra - rb))))))
