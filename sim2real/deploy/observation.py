"""Policy observations from the robots' latest states, with the simulator's own observation function."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.deploy.state import SwarmState
from sim2real.envs.drones.observation import drone_observation
from sim2real.envs.drones.tasks import NavigationTask
from sim2real.export.contract import ContractError

DRONE_FIELDS = (
    "rel_target",
    "target_vel",
    "altitude",
    "vel",
    "rot",
    "ang_vel",
    "last_action",
    "nbr_rel_pos",
    "nbr_rel_vel",
)
GOAL_FIELD = "rel_goals"
"""Navigation's task field: every goal relative to the drone, nearest first."""


class SwarmObserver:
    """Builds the ``[N, D]`` observations of a drone policy from a :class:`SwarmState` and per-robot targets.

    Targets are static world-frame positions ``[N, 3]`` [m] (target velocity zero). For ``drone-hover`` and
    ``drone-formation`` policies robot ``i`` flies to ``targets[i]``; for ``drone-navigation`` policies the
    targets are the swarm's goals and, as in the simulator, each robot's target is the goal the task's
    matching (``NavigationTask.matching``) gives it, and every goal is observed (field ``rel_goals``). A
    formation policy sees its reference as static: moving references are not supported on robots yet.

    A robot that has not reported yet is placed at its target, at rest, for its neighbours' observations.
    Missing targets are NaN, so observations that use them are not finite (and the failsafe holds them).

    Args:
        contract: the policy contract (``env_id``, ``obs_layout``, ``num_agents``).

    Raises:
        ContractError: the layout has a field the observer cannot compute.
    """

    def __init__(self, contract: dict[str, Any]) -> None:
        self.num_agents = int(contract["num_agents"])
        self.fields = {f["name"]: slice(f["start"], f["start"] + f["size"]) for f in contract["obs_layout"]}
        unknown = sorted(set(self.fields) - {*DRONE_FIELDS, GOAL_FIELD})
        missing = sorted(set(DRONE_FIELDS) - set(self.fields))
        if unknown or missing:
            raise ContractError(
                f"policy for {contract['env_id']!r}: the robot observer computes the fields "
                f"{[*DRONE_FIELDS, GOAL_FIELD]}; this layout has unknown field(s) {unknown} and lacks {missing}"
            )
        size = self.fields["nbr_rel_pos"].stop - self.fields["nbr_rel_pos"].start
        self.num_neighbors = size // 3
        self.shares_targets = GOAL_FIELD in self.fields
        """Navigation policies: every robot observes every goal, so each needs all targets."""
        self._navigation = NavigationTask(self.num_agents, 1) if self.shares_targets else None

    def observe(self, state: SwarmState, targets: np.ndarray, last_action: np.ndarray) -> np.ndarray:
        """Observations ``[N, D]`` float32 for every robot.

        Args:
            state: the robots' latest states (world-frame position, attitude and velocity; body rates).
            targets: target positions ``[N, 3]`` [m], world frame; NaN rows for robots without one.
            last_action: the action each robot last received, ``[N, A]`` in the policy's action bounds.
        """
        known = state.known
        pos = np.where(known[:, None], state.pos, targets)
        target_vel = np.zeros((1, self.num_agents, 3))
        extra = None
        target_pos = targets[None]
        if self._navigation is not None:
            self._navigation.targets = targets[None]
            target_pos, target_vel = self._navigation.target_state(np.zeros(1), pos[None], known[None])
            extra = self._navigation.extra_obs(pos[None])
        obs = drone_observation(
            pos[None],
            state.quat[None],
            state.vel[None],
            state.ang_vel_body[None],
            target_pos,
            target_vel,
            last_action[None],
            self.num_neighbors,
            self.fields,
            extra,
        )
        return obs[0]
