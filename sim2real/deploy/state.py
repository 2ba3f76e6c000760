"""Robot state as the policy needs it, and the latest state of every robot in a swarm.

Frames: positions, orientations and linear velocities are in the world frame (z up, the frame the targets
are given in); angular velocities are in the body frame (what a gyro measures). Quaternions are unit
``(x, y, z, w)`` rotating body to world, the order of ``geometry_msgs/Quaternion`` and of the simulators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NEVER = -1
"""``SwarmState.stamp_ns`` of a robot that has not reported yet."""


def agent_index(agents: Sequence[int], num_agents: int) -> slice | list[int]:
    """``agents`` as an index into ``[num_agents, ...]`` arrays: ``slice(None)`` when they are all the robots in
    order (the usual burst), which numpy takes as a view, else the list (fancy indexing, which costs a node
    just woken some microseconds more per use)."""
    agents = list(agents)
    return slice(None) if agents == list(range(num_agents)) else agents


@dataclass(frozen=True)
class RobotState:
    """One robot's measured state.

    Attributes:
        pos: position ``[3]`` [m], world frame.
        quat: attitude ``[4]`` (x, y, z, w), body to world.
        vel: linear velocity ``[3]`` [m/s], world frame.
        ang_vel_body: angular velocity ``[3]`` [rad/s], body frame.
        stamp_ns: measurement time [ns] on the controller's clock (the message header stamp).
    """

    pos: np.ndarray
    quat: np.ndarray
    vel: np.ndarray
    ang_vel_body: np.ndarray
    stamp_ns: int

    def row(self) -> np.ndarray:
        """The state as one row ``[13]``: ``pos``, ``quat``, ``vel``, ``ang_vel_body`` (the order above)."""
        return np.concatenate([self.pos, self.quat, self.vel, self.ang_vel_body])


class SwarmState:
    """The latest state of each of ``N`` robots, as ``[N, ...]`` float64 arrays in the frames above.

    Robots that have not reported yet have ``stamp_ns == NEVER`` and the placeholder state of a level robot
    at rest at the origin (the observer moves them to their targets, see ``SwarmObserver``).
    """

    def __init__(self, num_agents: int) -> None:
        self.pos = np.zeros((num_agents, 3))
        self.quat = np.tile([0.0, 0.0, 0.0, 1.0], (num_agents, 1))
        self.vel = np.zeros((num_agents, 3))
        self.ang_vel_body = np.zeros((num_agents, 3))
        self.stamp_ns = np.full(num_agents, NEVER, dtype=np.int64)

    @property
    def num_agents(self) -> int:
        return len(self.stamp_ns)

    @property
    def known(self) -> np.ndarray:
        """``[N]`` bool: robots that have reported at least once."""
        return self.stamp_ns != NEVER

    def update(self, agent: int, state: RobotState) -> None:
        """Store ``state`` as robot ``agent``'s latest (non-finite values included: the failsafe judges them)."""
        self.update_rows([agent], state.row()[None], [state.stamp_ns])

    def update_rows(self, agents: Sequence[int], rows: np.ndarray, stamps_ns: Sequence[int]) -> None:
        """Store the states of robots ``agents`` (distinct), rows ``[k, 13]`` (:meth:`RobotState.row`) stamped
        ``stamps_ns`` [ns], as their latest (non-finite values included: the failsafe judges them)."""
        index = agent_index(agents, self.num_agents)
        self.pos[index] = rows[:, 0:3]
        self.quat[index] = rows[:, 3:7]
        self.vel[index] = rows[:, 7:10]
        self.ang_vel_body[index] = rows[:, 10:13]
        self.stamp_ns[index] = stamps_ns

    def age_s(self, agent: int, now_ns: int) -> float | None:
        """Seconds from robot ``agent``'s latest stamp to ``now_ns``, or None if it never reported."""
        if self.stamp_ns[agent] == NEVER:
            return None
        return (now_ns - int(self.stamp_ns[agent])) * 1e-9
