"""``policy_node``: an exported sim2real drone policy flying a swarm over ROS 2.

Per robot ``R`` in the ``robots`` parameter (crazyswarm2-style names, relative to the node's namespace):

- subscribes ``R/odom`` (``nav_msgs/Odometry``, best effort, depth 1; pose in the world frame, twist in
  the body frame as REP 105 says, or in the world frame with ``odom_twist_frame: world``; stamped on the
  node's clock; read straight from the serialized bytes, :mod:`sim2real.deploy.cdr`) and, unless
  ``goal_topic`` is empty, ``R/goal`` (``geometry_msgs/PoseStamped``, reliable, world frame) which replaces
  R's entry of the ``targets`` parameter;
- publishes ``R/cmd_vel`` (``geometry_msgs/TwistStamped``: world-frame velocity setpoint [m/s] in
  ``twist.linear``, frame ``world_frame``) for ``vel`` policies, or ``R/cmd_rpm`` (``std_msgs/
  Float32MultiArray``: motor speeds [RPM], one dimension labelled ``m1,m2,m3,m4``) for ``rpm`` policies,
  reliable, depth 1 (both serialized straight from numpy). A command's header stamp is
  the stamp of the odometry that produced it (latency from stamps); the watchdog's safe commands carry the
  time they were sent.

and publishes one ``diagnostic_msgs/DiagnosticStatus`` per robot on ``/diagnostics`` (hardware_id = robot).
Control is event-driven on odometry arrival, decimated to the policy's control rate; the failsafe, clamp and
rate limit are ``sim2real.deploy`` (see ``SwarmController``). An odometry callback also takes the other robots'
odometry that has arrived meanwhile (a swarm driver publishes all robots at once) and steps them together: one
observation pass and one onnxruntime call for the burst instead of one per robot, so the last robot's command
does not wait for the others' inferences. Parameters: ``config/policy.yaml``.

Warm-up (``warmup_lead_s``, default 2.5 ms; 0: off): that long before the next burst is due, the node steps a
copy of the last burst through a second controller on the same policy and encodes its commands without
publishing them, so the burst's code is in the CPU caches when the burst comes (:mod:`s2r_ros.warmup`). By
default only on ``SCHED_FIFO`` (``realtime_priority``), where it was measured to help (``warmup_realtime_only``).

Odometry that cannot be read (not little-endian CDR) is ignored, with an error logged at most once per
``log_period_s``: the robot then goes stale and fails safe. Failsafe changes are logged at most once per
``log_period_s`` (default 1 s) per robot, with the number of changes not logged since: an rclpy log call
costs about a millisecond, and a flapping input must not slow the control loop down. The diagnostics count
every change.
"""

from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Float32MultiArray

from s2r_ros.bursts import take_waiting
from s2r_ros.executor import run_node
from s2r_ros.housekeeping import HousekeepingTimers
from s2r_ros.parameters import array_parameter
from s2r_ros.qos import COMMAND, DIAGNOSTICS, SENSOR
from s2r_ros.warmup import declare_warmup
from sim2real.deploy import AgentCommand, SwarmController
from sim2real.deploy.cdr import (
    CdrError,
    Float32ArrayWriter,
    OdometryOffsets,
    TwistStampedWriter,
    read_odometry_rows,
    read_stamp_ns,
)
from sim2real.deploy.codecs import TWIST_FRAMES, fill_stamp, read_position
from sim2real.deploy.failsafe import STARTUP_FAULTS, GuardedCommand
from sim2real.export import OnnxPolicy, verify_bundle
from sim2real.export.bundle import POLICY_FILE

NODE_NAME = "policy_node"
COMMAND_TOPICS = {"vel": "cmd_vel", "rpm": "cmd_rpm"}


class PolicyNode(Node):
    """The policy node; ``kwargs`` go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``...).

    Raises:
        BundleError, ContractError: the bundle fails verification or does not match the declared
            ``env_id``, ``num_agents`` or ``action_type``.
        ValueError: inconsistent parameters (robot count, targets, frames).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        bundle = self.declare_parameter("bundle", "").value
        if not bundle:
            raise ValueError("parameter 'bundle' (the exported bundle directory) is required")
        declared = {
            "env_id": self.declare_parameter("env_id", "").value,
            "num_agents": self.declare_parameter("num_agents", 0).value,
            "action_type": self.declare_parameter("action_type", "").value,
        }
        manifest = verify_bundle(bundle, {key: value for key, value in declared.items() if value})
        self.policy = OnnxPolicy(Path(bundle) / POLICY_FILE)
        contract = self.policy.contract
        num_agents = int(contract["num_agents"])

        robots = array_parameter(self, "robots", Parameter.Type.STRING_ARRAY) or [
            f"cf{i + 1}" for i in range(num_agents)
        ]
        if len(robots) != num_agents:
            raise ValueError(f"the policy flies {num_agents} robots; parameter 'robots' names {len(robots)}")
        targets = array_parameter(self, "targets", Parameter.Type.DOUBLE_ARRAY)
        if targets and len(targets) != 3 * num_agents:
            raise ValueError(
                f"parameter 'targets' needs x, y, z per robot ({3 * num_agents} numbers), got {len(targets)}"
            )
        self.twist_frame = self.declare_parameter("odom_twist_frame", "body").value
        if self.twist_frame not in TWIST_FRAMES:
            raise ValueError(f"parameter 'odom_twist_frame' must be one of {TWIST_FRAMES}, got {self.twist_frame!r}")
        self.world_frame = self.declare_parameter("world_frame", "world").value
        self.velocity = TwistStampedWriter(self.world_frame)
        trained_hz = float(contract["ctrl_freq_hz"] or 0.0)
        rate_hz = self.declare_parameter("rate_hz", trained_hz).value
        limits = {
            "rate_hz": rate_hz,
            "stale_timeout_s": self.declare_parameter("stale_timeout_s", 0.0).value,
            "max_step_fraction": self.declare_parameter("max_step_fraction", 0.0).value,
        }
        self.controller = SwarmController(
            self.policy,
            targets=np.asarray(targets, dtype=np.float64).reshape(num_agents, 3) if targets else None,
            **limits,
        )
        if trained_hz and abs(self.controller.rate_hz - trained_hz) > 1e-9:
            self.get_logger().warning(f"control rate {rate_hz} Hz differs from the trained {trained_hz:g} Hz")

        self.robots = list(robots)
        self.last_burst: tuple[list[int], list[bytes], list[int]] | None = None  # robots, odometry, offsets
        self.offsets = OdometryOffsets()
        self.warmer = declare_warmup(self, self._warm)
        # the warm-ups go through a second controller on the same policy: the robots' state never sees them
        self.shadow = SwarmController(self.policy, **limits) if self.warmer is not None else None
        if self.shadow is not None:
            self.shadow.targets = self.controller.targets  # the same array: goals reach both
        self.shadow_ns = 0  # the warm-ups' stamps [ns]
        self.log_period_s = self.declare_parameter("log_period_s", 1.0).value
        self.last_log_s = np.full(num_agents, -np.inf)
        self.unlogged = np.zeros(num_agents, dtype=np.int64)
        self.spec = self.controller.spec
        self.rpm = Float32ArrayWriter(",".join(self.spec.names), len(self.spec.names))
        state_topic = self.declare_parameter("state_topic", "odom").value
        goal_topic = self.declare_parameter("goal_topic", "goal").value
        command_topic = self.declare_parameter("command_topic", COMMAND_TOPICS[self.spec.action_type]).value
        message_type = TwistStamped if self.spec.action_type == "vel" else Float32MultiArray
        self.command_publishers, self.odometry_subscriptions = [], []
        for agent, robot in enumerate(self.robots):
            on_odometry = partial(self._on_odometry, agent)
            subscription = self.create_subscription(Odometry, f"{robot}/{state_topic}", on_odometry, SENSOR, raw=True)
            self.odometry_subscriptions.append(subscription)
            if goal_topic:
                self.create_subscription(PoseStamped, f"{robot}/{goal_topic}", partial(self._on_goal, agent), COMMAND)
            self.command_publishers.append(self.create_publisher(message_type, f"{robot}/{command_topic}", COMMAND))
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS)
        self.housekeeping = HousekeepingTimers(self)  # between the odometry bursts
        self.housekeeping.create_timer(1.0 / self.controller.rate_hz, self._on_watchdog)
        diagnostics_period_s = self.declare_parameter("diagnostics_period_s", 1.0).value
        if diagnostics_period_s <= 0:
            raise ValueError(f"parameter 'diagnostics_period_s' must be > 0 s, got {diagnostics_period_s}")
        self.housekeeping.create_timer(diagnostics_period_s, self._on_diagnostics)
        self.get_logger().info(
            f"policy {contract['env_id']} (run {manifest['provenance'].get('run_id')}, model version "
            f"{self.policy.model_version}) for {', '.join(self.robots)}: {self.spec.action_type} commands "
            f"[{self.spec.unit}] on {command_topic}, event-driven on {state_topic} at most "
            f"{self.controller.rate_hz:g} Hz, stale after {self.controller.failsafe.stale_timeout_s * 1e3:.0f} ms"
        )

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_odometry(self, agent: int, data: bytes) -> None:
        """Robot ``agent``'s serialized odometry and the other robots' that has arrived: stepped together, read in one
        pass. Unreadable odometry counts as none (the watchdog fails the robot safe when it goes stale)."""
        if self.warmer is not None:
            self.warmer.arrived()
        self.housekeeping.arrived()
        agents, messages, offsets = [], [], []
        for robot, message in [(agent, data), *take_waiting(self.odometry_subscriptions, agent)]:
            try:
                offsets.append(self.offsets(robot, message))
            except CdrError as err:
                logger = self.get_logger()
                logger.error(f"{self.robots[robot]}: odometry ignored: {err}", throttle_duration_sec=self.log_period_s)
                continue
            agents.append(robot)
            messages.append(message)
        if not agents:
            return
        rows = read_odometry_rows(messages, offsets, self.twist_frame)
        stamps = [read_stamp_ns(message) for message in messages]
        self.last_burst = (agents, messages, offsets)
        for out in self.controller.on_state_rows(agents, rows, stamps, self._now_ns()):
            self._publish(out)

    def _warm(self) -> None:
        """The last odometry burst through the second controller and the command encoder, nothing published
        (:mod:`s2r_ros.warmup`). Its stamps advance a second per warm-up, so every robot is due and fresh."""
        if self.last_burst is None:
            return
        agents, messages, offsets = self.last_burst
        rows = read_odometry_rows(messages, offsets, self.twist_frame)
        self.shadow_ns += 10**9
        for out in self.shadow.on_state_rows(agents, rows, [self.shadow_ns] * len(agents), self.shadow_ns):
            self._encode(out)

    def _on_goal(self, agent: int, msg: PoseStamped) -> None:
        self.controller.set_target(agent, read_position(msg))

    def _on_watchdog(self) -> None:
        for out in self.controller.watchdog(self._now_ns()):
            self._publish(out)

    def _publish(self, out: AgentCommand) -> None:
        if out.guarded.changed:
            self._log_change(out.agent, out.guarded)
        self.command_publishers[out.agent].publish(self._encode(out))

    def _encode(self, out: AgentCommand) -> bytes:
        """The serialized command message of ``out``."""
        if self.spec.action_type == "vel":
            return self.velocity.encode(out.guarded.command, out.stamp_ns)
        return self.rpm.encode(out.guarded.command)

    def _log_change(self, agent: int, guarded: GuardedCommand) -> None:
        """Log a failsafe change of robot ``agent``, unless one was logged less than ``log_period_s`` ago."""
        now = time.monotonic()
        if now - self.last_log_s[agent] < self.log_period_s:
            self.unlogged[agent] += 1
            return
        robot, logger = self.robots[agent], self.get_logger()
        since = f" ({self.unlogged[agent]} more changes since the last message)" if self.unlogged[agent] else ""
        self.last_log_s[agent], self.unlogged[agent] = now, 0
        if guarded.starting and guarded.fault in STARTUP_FAULTS:
            logger.info(f"{robot}: starting, waiting for {STARTUP_FAULTS[guarded.fault]}{since}")
        elif guarded.previous_fault is None:
            command = f"{guarded.command.tolist()} {self.spec.unit}"
            logger.warning(f"{robot}: failsafe ({guarded.fault}), sending the safe command {command}{since}")
        elif guarded.fault is None:
            logger.info(f"{robot}: failsafe left ({guarded.previous_fault}), policy in control{since}")
        else:
            logger.warning(f"{robot}: failsafe {guarded.previous_fault} -> {guarded.fault}{since}")

    def _on_diagnostics(self) -> None:
        now = self._now_ns()
        msg = DiagnosticArray()
        fill_stamp(msg.header.stamp, now)
        for agent, robot in enumerate(self.robots):
            status = self.controller.status(agent, now)
            msg.status.append(
                DiagnosticStatus(
                    level=getattr(DiagnosticStatus, status.level),
                    name=f"{self.get_name()}: {robot}",
                    message=status.message,
                    hardware_id=robot,
                    values=[KeyValue(key=key, value=value) for key, value in status.values.items()],
                )
            )
        self.diagnostics_publisher.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); 1 when its parameters are rejected."""
    return run_node(PolicyNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
