"""The batched multi-agent drone-swarm env: arrays shaped ``[num_envs, num_agents, ...]``.

One :meth:`DroneSwarmEnv.step` is one control period (``1 / ctrl_freq`` s) made of
``pyb_freq / ctrl_freq`` physics steps with the action held. Finished envs reset automatically; their
final observations are returned in ``info["final_obs"]``. Observation layout, action mapping, reward terms
and termination rules are documented in ``docs/drone-envs.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from sim2real.envs.drones.backend import make_backend
from sim2real.envs.drones.control import PIDController
from sim2real.envs.drones.models import DroneModel, get_model
from sim2real.envs.drones.observation import drone_observation
from sim2real.envs.drones.pairs import pair_offsets
from sim2real.envs.drones.rotations import quat_to_matrix, rpy_to_quat, tilt_angle
from sim2real.envs.drones.tasks import TASK_CLASSES, task_arguments

ACTION_TYPES = ("vel", "rpm")


@dataclass(frozen=True)
class ObsField:
    """One named slice of the per-agent observation vector.

    ``sensor`` names the measurement the field comes from (``position``, ``velocity``, ``attitude``, ``gyro``,
    ``task`` or ``command``); perturbations can select fields by sensor.
    """

    name: str
    start: int
    size: int
    unit: str
    description: str
    sensor: str

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


@dataclass(frozen=True)
class RewardWeights:
    """Per-agent reward terms (see ``docs/drone-envs.md``).

    ``proximity * (1 - tanh(d / proximity_scale)) - smoothness |a_t - a_{t-1}|^2 - spin |w|
    - separation * max(0, 1 - d_nn / separation_dist) - crash`` on the step an agent crashes, collides or
    leaves the arena; ``d_nn`` [m] is the distance to the nearest other drone.
    """

    proximity: float = 1.0
    proximity_scale: float = 0.5
    smoothness: float = 0.01
    spin: float = 0.005
    separation: float = 0.0
    separation_dist: float = 0.25
    crash: float = 10.0

    @classmethod
    def from_any(cls, value: RewardWeights | dict | None) -> RewardWeights:
        """Weights from an instance, a dict of fields (e.g. from a YAML config) or None (the defaults)."""
        if value is None or isinstance(value, cls):
            return value or cls()
        if not isinstance(value, dict):
            raise ValueError(f"reward must be RewardWeights or a dict of its fields, got {type(value).__name__}")
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown reward weight(s) {unknown}; fields are {sorted(names)}")
        weights = cls(**{k: float(v) for k, v in value.items()})
        if weights.proximity_scale <= 0 or weights.separation_dist <= 0:
            raise ValueError("reward proximity_scale and separation_dist must be > 0 m")
        return weights


class DroneSwarmEnv:
    """Batched multi-agent drone swarm.

    Args:
        task: ``"hover"``, ``"formation"`` or ``"navigation"``.
        num_envs: independent envs stepped together.
        num_drones: agents per env.
        backend: ``"batched"`` (numpy, fast) or ``"pybullet"`` (high fidelity).
        model: ``"cf2x"`` or ``"cf2p"``.
        action_type: ``"vel"`` (velocity setpoint through the PID, [-1, 1]^3 scaled by ``max_speed``) or
            ``"rpm"`` ([-1, 1]^4, ``rpm = hover_rpm (1 + rpm_range a)``).
        effects: aerodynamic effects (``"ground"``, ``"drag"``, ``"downwash"``).
        damping: PyBullet damping coefficient (0 by default).
        motor_lag: first-order motor dynamics.
        pyb_freq, ctrl_freq: physics and control rates [Hz]; ``pyb_freq`` must be a multiple of ``ctrl_freq``.
        episode_len_s: time limit [s] (truncation).
        num_neighbors: k nearest neighbours in the observation (at most ``num_drones - 1``).
        max_speed: velocity-command scale [m/s] for ``action_type="vel"``.
        rpm_range: RPM fraction around hover for ``action_type="rpm"``.
        crash_speed, crash_tilt: a ground contact is a crash above this speed [m/s] or tilt [rad].
        auto_reset: reset finished envs inside :meth:`step` (the PettingZoo adapter turns it off).
        seed: seed of the env's random generator.
        task_kwargs: passed to the task class.
    """

    def __init__(
        self,
        task: str = "hover",
        *,
        num_envs: int = 1,
        num_drones: int = 4,
        backend: str = "batched",
        model: str | DroneModel = "cf2x",
        action_type: str = "vel",
        effects: Iterable[str] | str | None = (),
        damping: float = 0.0,
        motor_lag: bool = False,
        pyb_freq: int = 240,
        ctrl_freq: int = 30,
        episode_len_s: float = 8.0,
        num_neighbors: int = 3,
        max_speed: float = 1.0,
        rpm_range: float = 0.25,
        crash_speed: float = 1.0,
        crash_tilt: float = 1.0,
        reward: RewardWeights | dict | None = None,
        auto_reset: bool = True,
        seed: int | None = None,
        **task_kwargs,
    ) -> None:
        if task not in TASK_CLASSES:
            raise ValueError(f"unknown task {task!r}: choose one of {sorted(TASK_CLASSES)}")
        if action_type not in ACTION_TYPES:
            raise ValueError(f"unknown action_type {action_type!r}: choose one of {list(ACTION_TYPES)}")
        if ctrl_freq < 1 or pyb_freq % ctrl_freq != 0:
            raise ValueError(
                f"pyb_freq ({pyb_freq} Hz) must be a positive multiple of ctrl_freq ({ctrl_freq} Hz), e.g. 240 and 30"
            )
        checks = {  # name: (value, valid, rule)
            "episode_len_s": (episode_len_s, episode_len_s * ctrl_freq >= 1, "must last at least one control step"),
            "max_speed": (max_speed, max_speed > 0, "must be > 0 m/s"),
            "rpm_range": (rpm_range, 0 < rpm_range <= 1, "must be in (0, 1]"),
            "num_neighbors": (num_neighbors, num_neighbors >= 0, "must be >= 0"),
            "crash_speed": (crash_speed, crash_speed > 0, "must be > 0 m/s"),
            "crash_tilt": (crash_tilt, 0 < crash_tilt <= np.pi, "must be in (0, pi] rad"),
            "num_envs": (num_envs, num_envs >= 1, "must be >= 1"),
            "num_drones": (num_drones, num_drones >= 1, "must be >= 1"),
        }
        for name, (value, valid, rule) in checks.items():
            if not valid:
                raise ValueError(f"{name} {rule}, got {value}")
        if not auto_reset and num_envs != 1:
            raise ValueError("auto_reset=False needs num_envs=1 (the PettingZoo view); batches reset automatically")
        self.model = get_model(model)
        task_cls = TASK_CLASSES[task]
        allowed = sorted(task_arguments(task_cls))
        unknown = sorted(set(task_kwargs) - set(allowed))
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for task {task!r}; task arguments are {allowed}")
        half_h = 0.5 * self.model.collision_height
        self.task = task_cls(int(num_drones), int(num_envs), min_spawn_height=half_h, **task_kwargs)
        self.arena_xy = self.task.half_width + 1.0
        self.arena_z = max(3.0, self.task.target_height[1] + 1.0)
        if self.task.spawn_height[1] >= self.arena_z:
            raise ValueError(f"spawn_height {self.task.spawn_height} must stay below the arena top {self.arena_z} m")
        self.task_name = task
        self.num_envs = int(num_envs)
        self.num_agents = int(num_drones)
        self.action_type = action_type
        self.ctrl_freq = int(ctrl_freq)
        self.substeps = int(pyb_freq) // self.ctrl_freq
        self.max_steps = round(episode_len_s * self.ctrl_freq)
        self.num_neighbors = min(int(num_neighbors), self.num_agents - 1)
        self.max_speed = float(max_speed)
        self.rpm_range = float(rpm_range)
        self.crash_speed = float(crash_speed)
        self.crash_tilt = float(crash_tilt)
        self.reward_weights = RewardWeights.from_any(reward)
        self.auto_reset = auto_reset
        self.sim = make_backend(
            backend,
            self.model,
            self.num_envs,
            self.num_agents,
            pyb_freq=pyb_freq,
            effects=effects,
            damping=damping,
            motor_lag=motor_lag,
        )
        self.backend = backend
        self.pid = PIDController(self.model, self.num_envs, self.num_agents, self.sim.dt)

        self.act_dim = 3 if action_type == "vel" else 4
        self.obs_layout = self._build_layout()
        self.obs_dim = self.obs_layout[-1].start + self.obs_layout[-1].size
        self._field_slices = {f.name: f.slice for f in self.obs_layout}
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.act_dim,), np.float32)
        shape = (self.num_envs, self.num_agents)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (*shape, self.obs_dim), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (*shape, self.act_dim), np.float32)

        self.rng = np.random.default_rng(seed)
        self.steps = np.zeros(self.num_envs, dtype=np.int64)
        self.active = np.ones(shape, dtype=bool)
        self.last_action = np.zeros((*shape, self.act_dim), dtype=np.float32)
        self.episode_return = np.zeros(shape)
        self.episode_collisions = np.zeros(shape, dtype=np.int64)
        self._needs_reset = True

    # ----------------------------------------------------------------- layout
    def _build_layout(self) -> list[ObsField]:
        k = self.num_neighbors
        spec = [
            ("rel_target", 3, "m", "target position minus own position (world frame)", "position"),
            ("target_vel", 3, "m/s", "target velocity (world frame)", "task"),
            ("altitude", 1, "m", "height of the centre of mass above the ground", "position"),
            ("vel", 3, "m/s", "own velocity (world frame)", "velocity"),
            ("rot", 9, "-", "body-to-world rotation matrix, row-major", "attitude"),
            ("ang_vel", 3, "rad/s", "body rates (body frame)", "gyro"),
            ("last_action", self.act_dim, "-", "previous action in [-1, 1]", "command"),
            ("nbr_rel_pos", 3 * k, "m", f"{k} nearest drones' positions minus own, nearest first", "position"),
            ("nbr_rel_vel", 3 * k, "m/s", f"{k} nearest drones' velocities minus own, same order", "velocity"),
        ]
        spec += [(name, size, unit, "task field", sensor) for name, size, unit, sensor in self.task.extra_fields]
        layout, start = [], 0
        for name, size, unit, desc, sensor in spec:
            layout.append(ObsField(name, start, size, unit, desc, sensor))
            start += size
        return layout

    def command_spec(self) -> dict:
        """How an action in [-1, 1] becomes the physical command :meth:`step` flies (per component).

        ``command = clip(offset + scale * action, low, high)``: velocity setpoints [m/s] for ``vel`` actions,
        motor speeds [RPM] for ``rpm`` actions. The exported policy computes the same affine map in its graph.
        """
        if self.action_type == "vel":
            names, unit = ["vx", "vy", "vz"], "m/s"
            scale, offset = [self.max_speed] * 3, [0.0] * 3
            low, high = [-self.max_speed] * 3, [self.max_speed] * 3
        else:
            names, unit = ["m1", "m2", "m3", "m4"], "rpm"
            hover = self.model.hover_rpm
            scale, offset = [hover * self.rpm_range] * 4, [hover] * 4
            low = [max(0.0, hover * (1.0 - self.rpm_range))] * 4
            high = [min(self.model.max_rpm, hover * (1.0 + self.rpm_range))] * 4
        return {"names": names, "unit": unit, "scale": scale, "offset": offset, "low": low, "high": high}

    def obs_field(self, name: str) -> slice:
        """Slice of the named observation field."""
        if name not in self._field_slices:
            raise KeyError(f"no observation field {name!r}; fields: {list(self._field_slices)}")
        return self._field_slices[name]

    # ----------------------------------------------------------------- reset
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        """Reset every env; returns observations ``[E, N, obs_dim]`` (float32) and info."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(np.arange(self.num_envs))
        self._needs_reset = False
        obs, target_pos = self._observe()
        return obs, {"active": self.active.copy(), **self.task.metrics(self.sim.pos, target_pos, self.active)}

    def _reset_envs(self, env_ids: np.ndarray) -> None:
        """Write fresh spawn states and targets into ``env_ids`` (no URDF reload)."""
        pos, yaw = self.task.sample_spawn(self.rng, len(env_ids))
        rpy = np.zeros((*yaw.shape, 3))
        rpy[..., 2] = yaw
        hover = np.full((len(env_ids), self.num_agents, 4), self.model.hover_rpm)
        self.sim.set_state(env_ids, pos, rpy_to_quat(rpy), rpm=hover)
        self.task.reset(self.rng, env_ids, pos)
        self.pid.reset(env_ids)
        self.steps[env_ids] = 0
        self.active[env_ids] = True
        self.last_action[env_ids] = 0.0
        self.episode_return[env_ids] = 0.0
        self.episode_collisions[env_ids] = 0

    # ----------------------------------------------------------------- step
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Apply ``actions [E, N, act_dim]`` in [-1, 1] (clipped) for one control period.

        Returns observations ``[E, N, obs_dim]`` float32, rewards ``[E, N]`` float32, terminated and truncated
        ``[E, N]`` bool, and info with ``active`` (agents still flying at the start of the step),
        ``pos_error``, ``collision``, ``crash``, ``out_of_arena`` and ``done_env``; for finished envs
        ``final_obs``, ``episode_return`` and ``episode_length``.
        """
        if self._needs_reset:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, self.num_agents, self.act_dim)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected} (num_envs, num_agents, act_dim), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError("actions contain NaN or inf")
        actions = np.clip(actions, -1.0, 1.0)
        active = self.active.copy()

        ground = np.zeros(active.shape, dtype=bool)
        hit_drone = np.zeros(active.shape, dtype=bool)
        impact = np.zeros(active.shape)
        if self.action_type == "vel":
            v_cmd = actions.astype(np.float64) * self.max_speed
            carrot = self.sim.pos.copy()
        else:
            rpm_cmd = self.model.hover_rpm * (1.0 + self.rpm_range * actions.astype(np.float64))
            rpm_cmd = np.where(active[..., None], np.clip(rpm_cmd, 0.0, self.model.max_rpm), 0.0)
        for _ in range(self.substeps):
            if self.action_type == "vel":
                carrot += v_cmd * self.sim.dt
                rpm_cmd = self.pid.compute(
                    self.sim.pos, self.sim.quat, self.sim.vel, self.sim.ang_vel_body, carrot, v_cmd
                )
                rpm_cmd[~active] = 0.0  # terminated drones have their motors off
            contacts = self.sim.step(rpm_cmd)
            ground |= contacts.ground
            hit_drone |= contacts.drones
            impact = np.maximum(impact, contacts.impact_speed)
        self.steps += 1

        rot = quat_to_matrix(self.sim.quat)
        pos = self.sim.pos
        crash = ground & ((impact > self.crash_speed) | (tilt_angle(rot) > self.crash_tilt)) & active
        collision = hit_drone & active
        out = (
            (np.abs(pos[..., 0]) > self.arena_xy) | (np.abs(pos[..., 1]) > self.arena_xy) | (pos[..., 2] > self.arena_z)
        ) & active
        terminated = crash | collision | out

        target_pos, _ = self.task.target_state(self.steps / self.ctrl_freq, pos, active)
        w = self.reward_weights
        dist = self.task.distance(pos, target_pos, active)
        reward = (
            w.proximity * (1.0 - np.tanh(dist / w.proximity_scale))
            - w.smoothness * np.sum((actions - self.last_action) ** 2, axis=-1)
            - w.spin * np.linalg.norm(self.sim.ang_vel_body, axis=-1)
            - w.crash * terminated
        )
        if w.separation > 0 and self.num_agents > 1:
            dx, dy, dz = pair_offsets(pos)
            nearest = np.sqrt(np.min(dx * dx + dy * dy + dz * dz, axis=-1))
            reward = reward - w.separation * np.clip(1.0 - nearest / w.separation_dist, 0.0, 1.0)
        reward = np.where(active, reward, 0.0).astype(np.float32)
        self.last_action = np.where(active[..., None], actions, self.last_action)
        self.active = active & ~terminated
        self.episode_return += reward
        self.episode_collisions += collision

        truncated = (self.steps >= self.max_steps)[:, None] & self.active  # live agents only
        done_env = ~np.any(self.active, axis=1) | (self.steps >= self.max_steps)
        obs, target_pos = self._observe()
        info = {
            "active": active,
            **self.task.metrics(pos, target_pos, active),
            "collision": collision,
            "crash": crash,
            "out_of_arena": out,
            "done_env": done_env,
        }
        if np.any(done_env):
            info["final_obs"] = obs.copy()
            info["episode_return"] = self.episode_return.copy()
            info["episode_length"] = self.steps.copy()
            info["episode_collisions"] = self.episode_collisions.copy()
            if self.auto_reset:
                ids = np.nonzero(done_env)[0]
                self._reset_envs(ids)
                fresh, _ = self._observe()
                obs[ids] = fresh[ids]
            else:
                self._needs_reset = True
        return obs, reward, terminated, truncated, info

    # ----------------------------------------------------------------- observation
    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        """Observations ``[E, N, obs_dim]`` float32 and the targets they were computed with."""
        s = self.sim
        target_pos, target_vel = self.task.target_state(self.steps / self.ctrl_freq, s.pos, self.active)
        obs = drone_observation(
            s.pos,
            s.quat,
            s.vel,
            s.ang_vel_body,
            target_pos,
            target_vel,
            self.last_action,
            self.num_neighbors,
            self._field_slices,
            self.task.extra_obs(s.pos),
        )
        return obs, target_pos

    def observe(self) -> np.ndarray:
        """Current observations ``[E, N, obs_dim]`` float32 (what the last reset or step returned)."""
        return self._observe()[0]

    def close(self) -> None:
        """Release the physics backend."""
        self.sim.close()

    def __enter__(self) -> DroneSwarmEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
