"""Parameter helpers shared by the sim2real nodes."""

from __future__ import annotations

from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter


def array_parameter(node: Node, name: str, kind: Parameter.Type) -> list:
    """Declare the array parameter ``name`` of type ``kind`` on ``node`` and return its value; an empty list when
    it is left unset (an array parameter has no default that rclpy can infer a type from)."""
    node.declare_parameter(name, kind)
    try:
        return list(node.get_parameter(name).value)
    except ParameterUninitializedException:
        return []
