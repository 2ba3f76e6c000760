"""The simulator side of the ROS 2 bench, without ROS: one swarm flown on the latest command of each robot.

The sim bridge node (``s2r_bench.sim_bridge_node``) owns a :class:`BridgeSim`. Commands arrive in physical
units (the policy contract's ``command``: m/s for velocity policies, RPM for motor policies) and are mapped
back to the env's actions in [-1, 1]. A robot whose last command is older than ``command_timeout_s`` (or
that never sent one) gets action 0, which is the hover of both action types (zero velocity setpoint, hover
RPM), as a real Crazyflie levels out when its setpoint stream stops.

Dynamics perturbations (``dynamics.*`` kinds of a spec) act here, in the simulator; everything that acts on
messages is the perturbation node's (:func:`split_spec`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim2real.deploy.state import NEVER
from sim2real.envs import make


def split_spec(spec: Any) -> tuple[dict | None, dict | None]:
    """Split a perturbation spec into ``(dynamics, messages)``: the ``dynamics.*`` kinds (for the simulator)
    and the rest (for the perturbation node), each a spec dict or None when empty."""
    from sim2real import perturb

    parsed = perturb.parse_spec(spec).to_dict()
    items = parsed.get("perturbations", [])
    dynamics = [p for p in items if p["kind"].startswith("dynamics.")]
    messages = [p for p in items if not p["kind"].startswith("dynamics.")]
    seed = {"seed": parsed["seed"]} if parsed.get("seed") is not None else {}
    return (
        {"perturbations": dynamics, **seed} if dynamics else None,
        {"perturbations": messages, **seed} if messages else None,
    )


class BridgeSim:
    """One drone swarm (``num_envs=1``) stepped at its control rate on the robots' latest commands.

    Args:
        env_id, env_kwargs: the env (``make`` arguments without ``num_envs``), e.g. from a bundle's contract.
        backend: ``pybullet`` (default, the "real" world) or ``batched``.
        seed: env seed (spawn states and targets).
        duration_s: how long the bench flies; the episode is made long enough and never resets.
        dynamics: a ``dynamics.*`` perturbation spec applied to the simulator, or None.
        command_timeout_s: a command older than this is dropped for the hover action.
        rate_hz: step (and publish) at this rate instead of the env's control rate (an integer number of Hz).
    """

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict[str, Any],
        *,
        backend: str = "pybullet",
        seed: int = 0,
        duration_s: float = 60.0,
        dynamics: Any = None,
        command_timeout_s: float = 0.5,
        rate_hz: float | None = None,
    ) -> None:
        kwargs = {**env_kwargs, "episode_len_s": float(duration_s) + 10.0, "auto_reset": False}
        if rate_hz:  # another control rate than the trained one; physics at the first multiple >= 240 Hz
            kwargs |= {"ctrl_freq": int(rate_hz), "pyb_freq": int(rate_hz) * math.ceil(240 / int(rate_hz))}
        env = make(env_id, num_envs=1, backend=backend, seed=seed, **kwargs)
        if dynamics is not None:
            from sim2real import perturb

            env = perturb.apply(env, dynamics, seed=seed)
        self.env = env
        self.env.reset(seed=seed)
        spec = env.command_spec()
        self.offset = np.asarray(spec["offset"], dtype=np.float64)
        self.scale = np.asarray(spec["scale"], dtype=np.float64)
        self.command_names: list[str] = list(spec["names"])
        self.num_agents: int = env.num_agents
        self.ctrl_freq: float = float(env.ctrl_freq)
        self.command_timeout_ns = int(command_timeout_s * 1e9)
        self.actions = np.zeros((self.num_agents, len(self.command_names)), dtype=np.float32)
        self.command_ns = np.full(self.num_agents, NEVER, dtype=np.int64)
        self.time_s = 0.0
        self.collisions = np.zeros(self.num_agents, dtype=np.int64)
        self.rejected_commands = 0

    def set_command(self, agent: int, command: np.ndarray, now_ns: int) -> bool:
        """Store robot ``agent``'s command (physical units, ``[A]``); False (and counted) when it is not finite
        or has the wrong size."""
        command = np.asarray(command, dtype=np.float64)
        if command.shape != self.offset.shape or not np.all(np.isfinite(command)):
            self.rejected_commands += 1
            return False
        self.actions[agent] = np.clip((command - self.offset) / self.scale, -1.0, 1.0)
        self.command_ns[agent] = now_ns
        return True

    def step(self, now_ns: int) -> dict[str, np.ndarray]:
        """Advance one control period; returns ``collision``, ``crash`` and ``active`` ``[N]`` and
        ``commanded`` ``[N]`` (robots flying a fresh command rather than the hover fallback)."""
        fresh = (self.command_ns != NEVER) & (now_ns - self.command_ns <= self.command_timeout_ns)
        actions = np.where(fresh[:, None], self.actions, 0.0).astype(np.float32)
        _, _, _, _, info = self.env.step(actions[None])
        self.time_s += 1.0 / self.ctrl_freq
        self.collisions += info["collision"][0]
        return {
            "collision": info["collision"][0],
            "crash": info["crash"][0],
            "active": self.env.active[0].copy(),
            "commanded": fresh,
        }

    def state_rows(self) -> np.ndarray:
        """Every robot's true state as rows ``[N, 13]`` (:meth:`sim2real.deploy.state.RobotState.row`: world-frame
        position, attitude and velocity, body rates)."""
        sim = self.env.sim
        return np.concatenate([sim.pos[0], sim.quat[0], sim.vel[0], sim.ang_vel_body[0]], axis=1, dtype=np.float64)

    def targets(self) -> np.ndarray:
        """Each robot's current target position ``[N, 3]`` [m] (world frame)."""
        sim = self.env.sim
        target_pos, _ = self.env.task.target_state(np.asarray([self.time_s]), sim.pos, self.env.active)
        return np.asarray(target_pos[0], dtype=np.float64).copy()

    def close(self) -> None:
        """Release the simulator."""
        self.env.close()
