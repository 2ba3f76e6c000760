"""Dynamics shifts: ``dynamics.*`` kinds write into the per-drone physical parameters of the simulator.

They work on both drone backends (both read ``env.sim.params`` every physics step; see
:mod:`sim2real.envs.drones.params`). A ``scale`` is a multiplier of the nominal value: a number is a
test-time shift, ``[low, high]`` is domain randomisation (drawn uniformly per episode and drone). The
wrapper rebuilds each touched parameter every step as ``nominal * product of factors`` and the external
force as ``nominal + sum of forces``, so kinds compose and switching one off restores the nominal value.
"""

from __future__ import annotations

import numpy as np

from sim2real.perturb.base import Perturbation
from sim2real.perturb.spec import REQUIRED, Param, SpecError

SCALE = Param(
    "scale",
    REQUIRED,
    "Multiplier of the nominal value, or [low, high] drawn per episode and drone.",
    low=0.0,
    strength=True,
)
MOTORS = Param("ints", None, "Motors hit (0..3, Bitcraze M1..M4 order); none = all four.", low=0, high=3)


def _air_rotor_speed(env) -> float:
    """Summed rotor speed at hover [rad/s]: the anchor's rotor drag is ``-C * sum(omega) * v_air``."""
    return 4.0 * env.model.hover_rpm * 2.0 * np.pi / 60.0


def _require_sim(p: Perturbation) -> None:
    if p.ctx.env is None or not hasattr(p.ctx.env, "sim"):
        raise SpecError(
            f"{p.where}: dynamics kinds need a drone simulator env (the bench applies them in its sim bridge)"
        )


class ScaleShift(Perturbation):
    """Multiplies parameters of the hit drones; ``targets`` names the :class:`DroneParams` fields."""

    channel = "dynamics"
    targets: tuple[str, ...]

    def setup(self) -> None:
        _require_sim(self)
        e, n = self.ctx.num_envs, self.ctx.num_agents
        self.factor = np.ones((e, n))

    def reset_state(self, env_ids):
        s = self.p["scale"]
        if isinstance(s, list):
            self.factor[env_ids] = self.rng.uniform(s[0], s[1], (len(env_ids), self.ctx.num_agents))
        else:
            self.factor[env_ids] = s
        hit = self.agent_mask[env_ids] & self.episode_on[env_ids][:, None] & self.enabled
        if self.log is not None:
            steps = np.zeros(self.ctx.num_envs, dtype=np.int64)
            full_hit = np.zeros_like(self.agent_mask)
            full_hit[env_ids] = hit
            self.log.add(self.kind, self.name, -1, steps, full_hit, self.factor.copy())

    def multiplier(self, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        """Multiplier ``[E, N]`` (or ``[E, N, 4]`` per motor) to apply this step."""
        hit, strength = self.gate(episode_step, global_step)
        m = np.where(hit, 1.0 + (self.factor - 1.0) * strength[:, None], 1.0)
        motors = self.p.get("motors")
        if motors is None:
            return m
        per_motor = np.ones((*m.shape, 4))
        per_motor[..., motors] = m[..., None]
        return per_motor


def _scale_kind(name: str, targets: tuple[str, ...], text: str, with_motors: bool = False) -> type[ScaleShift]:
    params = {"scale": SCALE, **({"motors": MOTORS} if with_motors else {})}
    attrs = {"kind": f"dynamics.{name}", "targets": targets, "summary": text, "params": params}
    cls = type(f"Scale_{name}", (ScaleShift,), attrs)
    globals()[cls.__name__] = cls  # a module attribute, so perturbed envs pickle (training checkpoints)
    return cls


SCALE_KINDS = (
    _scale_kind("mass", ("mass",), "scales the drone mass (the env keeps commanding the nominal hover RPM)."),
    _scale_kind("inertia", ("inertia",), "scales the three principal moments of inertia."),
    _scale_kind(
        "thrust", ("kf",), "scales the thrust coefficient kf of the hit motors (a weak or strong motor).", True
    ),
    _scale_kind("torque", ("km",), "scales the drag-torque coefficient km of the hit motors (yaw authority).", True),
    _scale_kind("motor_tau", ("motor_tau",), "scales the motor time constant (only acts with motor_lag on)."),
    _scale_kind("drag", ("drag_xy", "drag_z"), "scales the rotor-drag coefficients (only acts with the drag effect)."),
    _scale_kind(
        "ground_effect", ("gnd_coeff",), "scales the ground-effect coefficient (only acts with the ground effect)."
    ),
)


class Wind(Perturbation):
    kind = "dynamics.wind"
    channel = "dynamics"
    summary = (
        "blows a horizontal wind (constant plus Ornstein-Uhlenbeck gusts); force = rotor-drag coefficient * "
        "summed hover rotor speed * wind velocity, per drone."
    )
    params = {
        "speed": Param("float", REQUIRED, "Mean wind speed [m/s].", low=0.0, strength=True),
        "heading_deg": Param(
            "float", None, "Direction the wind blows towards, degrees from +x; none = random per episode."
        ),
        "gust_std": Param(
            "float", 0.0, "Stationary standard deviation of the gusts per axis [m/s].", low=0.0, strength=True
        ),
        "gust_tau": Param("float", 2.0, "Gust correlation time [s].", low=1e-3),
    }

    def setup(self) -> None:
        _require_sim(self)
        self.coeff = np.array([1.0, 1.0, 0.0]) * _air_rotor_speed(self.ctx.env)  # [N per m/s] / drag coefficient
        e = self.ctx.num_envs
        self.heading = np.zeros(e)
        self.gust = np.zeros((e, 3))

    def reset_state(self, env_ids):
        h = self.p["heading_deg"]
        self.heading[env_ids] = np.deg2rad(h) if h is not None else self.rng.uniform(-np.pi, np.pi, len(env_ids))
        self.gust[env_ids] = 0.0

    def force(self, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        """World-frame force ``[E, N, 3]`` [N] on the hit drones this step (also advances the gusts)."""
        hit, strength = self.gate(episode_step, global_step)
        dt, tau = self.ctx.dt, self.p["gust_tau"]
        sigma = self.p["gust_std"] * np.sqrt(2.0 * dt / tau)
        self.gust += -self.gust * (dt / tau) + sigma * self.rng.standard_normal(self.gust.shape)
        self.gust[:, 2] = 0.0
        mean = self.p["speed"] * np.stack([np.cos(self.heading), np.sin(self.heading), np.zeros_like(self.heading)], -1)
        wind = (mean + self.gust) * strength[:, None]  # [E, 3] m/s
        params = self.ctx.env.sim.params
        force = params.drag_xy[..., None] * self.coeff * wind[:, None, :]
        force = np.where(hit[..., None], force, 0.0)
        self.record(hit, np.linalg.norm(wind, axis=-1)[:, None] * np.ones(hit.shape), episode_step, global_step)
        return force


class Push(Perturbation):
    kind = "dynamics.push"
    channel = "dynamics"
    summary = (
        "pushes hit drones with a horizontal force of `force` N for `duration` steps, starting with "
        "probability `rate` per step."
    )
    params = {
        "force": Param("float", REQUIRED, "Push force [N] (a CF2X weighs 0.26 N).", low=0.0, strength=True),
        "duration": Param("int", 3, "Push length in steps.", low=1),
        "rate": Param("float", 0.01, "Probability per step and drone that a push starts.", low=0.0, high=1.0),
    }

    def setup(self) -> None:
        _require_sim(self)
        e, n = self.ctx.num_envs, self.ctx.num_agents
        self.left = np.zeros((e, n), dtype=np.int64)
        self.direction = np.zeros((e, n, 3))

    def reset_state(self, env_ids):
        self.left[env_ids] = 0

    def force(self, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        hit, strength = self.gate(episode_step, global_step)
        start = hit & (self.left == 0) & (self.rng.random(hit.shape) < self.p["rate"])
        angle = self.rng.uniform(-np.pi, np.pi, hit.shape)
        new_dir = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], -1)
        self.direction = np.where(start[..., None], new_dir, self.direction)
        self.left = np.where(start, self.p["duration"], self.left)
        pushing = hit & (self.left > 0)
        self.left = np.maximum(self.left - 1, 0)
        magnitude = self.p["force"] * strength[:, None] * pushing
        self.record(pushing, magnitude, episode_step, global_step)
        return self.direction * magnitude[..., None]


DYNAMICS_KINDS = (*SCALE_KINDS, Wind, Push)
