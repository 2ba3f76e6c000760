"""ROS 2 message fields to numpy and back, without importing ROS: functions read and fill message objects.

Odometry convention (REP 105, ``nav_msgs/Odometry``): the pose is in ``header.frame_id`` (the world frame,
z up), the twist is in ``child_frame_id`` (the body frame). :func:`read_odometry` turns the twist into the
policy's frames (linear velocity in the world frame, angular velocity in the body frame) and
:func:`fill_odometry` does the reverse, so a simulator bridge that fills odometry with it matches a driver
that follows REP 105. Drivers that publish the twist in the world frame are read with ``twist_frame="world"``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.deploy.state import RobotState
from sim2real.envs.drones.rotations import quat_to_matrix

TWIST_FRAMES = ("body", "world")


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds of a ``builtin_interfaces/Time`` (``sec``, ``nanosec``)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def fill_stamp(stamp: Any, ns: int) -> None:
    """Set a ``builtin_interfaces/Time`` to ``ns`` nanoseconds (``ns >= 0``)."""
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)


def _xyz(vector: Any) -> np.ndarray:
    return np.array([vector.x, vector.y, vector.z], dtype=np.float64)


def _set_xyz(vector: Any, values: np.ndarray) -> None:
    vector.x, vector.y, vector.z = (float(v) for v in values)


def read_odometry(msg: Any, twist_frame: str = "body") -> RobotState:
    """The :class:`RobotState` in a ``nav_msgs/Odometry`` (stamp from its header).

    ``twist_frame`` says the frame of the message's twist: ``body`` (REP 105, ``child_frame_id``) or
    ``world`` (``header.frame_id``).
    """
    pose, twist = msg.pose.pose, msg.twist.twist
    q = pose.orientation
    quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
    return odometry_state(
        _xyz(pose.position), quat, _xyz(twist.linear), _xyz(twist.angular), stamp_to_ns(msg.header.stamp), twist_frame
    )


def odometry_state(
    position: np.ndarray,
    quat: np.ndarray,
    linear: np.ndarray,
    angular: np.ndarray,
    stamp_ns: int,
    twist_frame: str = "body",
) -> RobotState:
    """The :class:`RobotState` of an odometry's pose ``[3]``, ``[4]`` (x, y, z, w) and twist ``[3]``, ``[3]``
    given in ``twist_frame`` (see :func:`read_odometry`)."""
    velocity, body_rates = twist_to_state(quat, linear, angular, twist_frame)
    return RobotState(position, quat, velocity, body_rates, stamp_ns)


def odometry_twist(state: RobotState, twist_frame: str = "body") -> tuple[np.ndarray, np.ndarray]:
    """The odometry twist (linear ``[3]`` [m/s], angular ``[3]`` [rad/s]) of ``state`` in ``twist_frame``."""
    return state_to_twist(np.asarray(state.quat, dtype=np.float64), state.vel, state.ang_vel_body, twist_frame)


def twist_to_state(
    quat: np.ndarray, linear: np.ndarray, angular: np.ndarray, twist_frame: str = "body"
) -> tuple[np.ndarray, np.ndarray]:
    """An odometry twist in ``twist_frame`` as the state's velocity (world) and body rates, ``([..., 3], [..., 3])``,
    for attitudes ``quat [..., 4]`` (x, y, z, w): one robot or a batch."""
    rot = quat_to_matrix(quat)  # body to world
    if twist_frame == "body":
        return _rotate(rot, linear), angular
    if twist_frame == "world":
        return linear, _rotate(np.swapaxes(rot, -1, -2), angular)
    raise ValueError(f"twist_frame must be one of {TWIST_FRAMES}, got {twist_frame!r}")


def state_to_twist(
    quat: np.ndarray, velocity: np.ndarray, body_rates: np.ndarray, twist_frame: str = "body"
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`twist_to_state`: the odometry twist ``(linear, angular)`` in ``twist_frame``."""
    rot = quat_to_matrix(quat)
    if twist_frame == "body":
        return _rotate(np.swapaxes(rot, -1, -2), velocity), np.asarray(body_rates)
    if twist_frame == "world":
        return np.asarray(velocity), _rotate(rot, body_rates)
    raise ValueError(f"twist_frame must be one of {TWIST_FRAMES}, got {twist_frame!r}")


def _rotate(rot: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``rot [..., 3, 3] @ vectors [..., 3]`` for each robot."""
    return (rot @ np.asarray(vectors)[..., None])[..., 0]


def fill_odometry(msg: Any, state: RobotState, twist_frame: str = "body") -> None:
    """Write ``state`` into a ``nav_msgs/Odometry`` (stamp, pose, twist in ``twist_frame``); frame ids are left."""
    fill_stamp(msg.header.stamp, state.stamp_ns)
    pose, twist = msg.pose.pose, msg.twist.twist
    _set_xyz(pose.position, state.pos)
    q = pose.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in state.quat)
    linear, angular = odometry_twist(state, twist_frame)
    _set_xyz(twist.linear, linear)
    _set_xyz(twist.angular, angular)


def read_position(msg: Any) -> np.ndarray:
    """The position ``[3]`` [m] of a ``geometry_msgs/PoseStamped`` (e.g. a goal), in its header's frame."""
    return _xyz(msg.pose.position)
