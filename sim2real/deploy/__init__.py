"""Running an exported policy on robots, without ROS: observations from robot state, failsafe, command guard.

The ROS 2 policy node (``ros2_ws/src/s2r_ros``) is a thin adapter around :class:`SwarmController`: it turns
messages into numpy with :mod:`sim2real.deploy.codecs` (message objects) or :mod:`sim2real.deploy.cdr`
(serialized bytes, the control path), calls the controller, and turns commands back into messages.
Everything here is numpy (and onnxruntime through ``OnnxPolicy``) and is unit-tested without DDS.
"""

from sim2real.deploy.command import CommandSpec
from sim2real.deploy.controller import AgentCommand, SwarmController
from sim2real.deploy.failsafe import FAULTS, Failsafe, GuardedCommand
from sim2real.deploy.observation import SwarmObserver
from sim2real.deploy.schedule import ControlSchedule
from sim2real.deploy.state import RobotState, SwarmState

__all__ = [
    "FAULTS",
    "AgentCommand",
    "CommandSpec",
    "ControlSchedule",
    "Failsafe",
    "GuardedCommand",
    "RobotState",
    "SwarmController",
    "SwarmObserver",
    "SwarmState",
]
