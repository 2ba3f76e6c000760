"""QoS presets of the sim2real nodes (``shared/research/ros2.md`` section 8.2).

Compatibility: a RELIABLE subscription never receives from a BEST_EFFORT publisher; a BEST_EFFORT
subscription receives from both. A simulator bridge must publish with the QoS of the real driver.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR = QoSProfile(
    reliability=ReliabilityPolicy.BEST_EFFORT,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    durability=DurabilityPolicy.VOLATILE,
)
"""State streams (odometry): only the newest sample matters, a late one is dropped, never resent."""

COMMAND = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    durability=DurabilityPolicy.VOLATILE,
)
"""Commands and goals: delivered (resent if lost), newest only; also matches best-effort subscribers."""

DIAGNOSTICS = QoSProfile(
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    durability=DurabilityPolicy.VOLATILE,
)
"""``/diagnostics``: the usual reliable depth-10 profile of diagnostic tools."""
