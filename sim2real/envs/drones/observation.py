"""The per-agent drone observation as a pure function of the swarm's state.

:class:`~sim2real.envs.drones.env.DroneSwarmEnv` computes its observations with :func:`drone_observation`
from the simulator state, and the deployed policy (``sim2real.deploy``) computes them with the same function
from the robots' odometry, so simulation and robot share one implementation. The field layout is documented
in ``docs/drone-envs.md``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sim2real.envs.drones.pairs import pair_offsets, pair_table
from sim2real.envs.drones.rotations import quat_to_matrix


def drone_observation(
    pos: np.ndarray,
    quat: np.ndarray,
    vel: np.ndarray,
    ang_vel_body: np.ndarray,
    target_pos: np.ndarray,
    target_vel: np.ndarray,
    last_action: np.ndarray,
    num_neighbors: int,
    fields: Mapping[str, slice],
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Observations ``[E, N, D]`` float32 of ``E`` swarms of ``N`` drones.

    Args:
        pos: centre-of-mass positions ``[E, N, 3]`` [m], world frame (z up).
        quat: attitudes ``[E, N, 4]``, unit quaternions in (x, y, z, w) order rotating body to world (the
            order of PyBullet and of ``geometry_msgs/Quaternion``).
        vel: linear velocities ``[E, N, 3]`` [m/s], world frame.
        ang_vel_body: angular velocities ``[E, N, 3]`` [rad/s], body frame (what a gyro measures).
        target_pos: target positions ``[E, N, 3]`` [m], world frame.
        target_vel: target velocities ``[E, N, 3]`` [m/s], world frame.
        last_action: previous actions ``[E, N, A]`` in [-1, 1].
        num_neighbors: k, the nearest other drones observed (``0 <= k <= N - 1``).
        fields: observation slices by field name (``rel_target``, ``target_vel``, ``altitude``, ``vel``,
            ``rot``, ``ang_vel``, ``last_action``, ``nbr_rel_pos``, ``nbr_rel_vel``); ``D`` is the largest stop.
        extra: task-specific fields ``[E, N, X]`` (e.g. navigation goals), written into the last ``X`` columns.
    """
    e, n = pos.shape[:2]
    obs_dim = max(s.stop for s in fields.values())
    obs = np.empty((e, n, obs_dim), dtype=np.float32)
    obs[..., fields["rel_target"]] = target_pos - pos
    obs[..., fields["target_vel"]] = target_vel
    obs[..., fields["altitude"]] = pos[..., 2:3]
    obs[..., fields["vel"]] = vel
    obs[..., fields["rot"]] = quat_to_matrix(quat).reshape(e, n, 9)
    obs[..., fields["ang_vel"]] = ang_vel_body
    obs[..., fields["last_action"]] = last_action
    k = num_neighbors
    if k > 0:
        dx, dy, dz = pair_offsets(pos)
        order = np.argsort(dx * dx + dy * dy + dz * dz, axis=-1)[..., :k]  # [E, N, k] over the others
        nearest = pair_table(n)[1].reshape(n, n - 1)[np.arange(n)[:, None], order]
        env_idx = np.arange(e)[:, None, None]
        obs[..., fields["nbr_rel_pos"]] = (pos[env_idx, nearest] - pos[:, :, None, :]).reshape(e, n, 3 * k)
        obs[..., fields["nbr_rel_vel"]] = (vel[env_idx, nearest] - vel[:, :, None, :]).reshape(e, n, 3 * k)
    if extra is not None:
        obs[..., obs_dim - extra.shape[-1] :] = extra
    return obs
