"""``perturbation_node``: injects a perturbation spec between the robots' sensors and the policy.

Per robot ``R`` of ``robots``, it proxies ``R/<state_in>`` (``odom_raw``) to ``R/<state_out>`` (``odom``),
``nav_msgs/Odometry`` best effort, and, when ``command_in`` is set, ``R/<command_in>`` (``cmd_vel_raw``) to
``R/<command_out>`` (``cmd_vel``), ``geometry_msgs/TwistStamped`` reliable. Both are read from and written into
the serialized bytes (:mod:`sim2real.deploy.cdr`: no deserialization on the control path; headers, frame ids,
covariances and angular rates pass through). Bytes that are not such a message in little-endian CDR are
passed on untouched, with a throttled error in the log: the proxy hides nothing from the node behind it,
which has its own checks (the policy node fails safe). Each message goes through
:class:`sim2real.perturb.stream.StreamPerturber` (the same perturbation objects as the simulator, one call per
message): odometry as the fields ``position`` [3] (world, m), ``attitude`` [4] (quaternion x, y, z, w;
renormalised after perturbation), ``velocity`` [3] (world, m/s) and ``gyro`` [3] (body, rad/s), so a
spec's sensor names (``fields: [position, velocity]``) mean the same as in simulation; commands in the
policy's action units (``command = offset + scale * action`` from the bundle's contract), so malicious
``random`` commands are uniform over the command box. A message the spec drops (dropout, loss bursts) is not
forwarded; a delayed one carries its original payload under the newest header. The perturbations compute in
float32, as in simulation; a message they leave as it was goes on byte for byte. ``dynamics.*`` kinds act in
the simulator and are rejected here.

Bursts: a swarm driver publishes every robot's state at once. A callback also takes the other robots' messages
waiting on the same hop, perturbs each on its own robot's stream (nothing changes per robot), then forwards them
together, so the node behind gets the swarm's states at once and the policy node steps them in one inference
instead of one per robot. On the 16-drone bench with this hop at normal scheduling this cut the policy node's
CPU from 54 % to 43 % and raised the achieved command rate from 76 % to 96 % (one 15 s run each, 2 cores).

Ground truth: every ``events_period_s`` (default 0.1 s) the hits since the last report go out on
``/bench/perturbation_events`` (``std_msgs/String``): a JSON list of ``{robot, stream, kind, name, hits,
mean_magnitude}``, one record per robot, stream and perturbation that hit (``mean_magnitude`` is the mean over
all its hits so far); nothing is sent when nothing hit. One message per period instead of one per hit keeps the
node and the recorder off the control path's CPU. Hits after the last report before shutdown are not sent.
The service ``~/set_enabled`` (``std_srvs/SetBool``) switches all perturbations on or off at run time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from s2r_ros.bursts import take_waiting
from s2r_ros.executor import run_node
from s2r_ros.parameters import array_parameter
from s2r_ros.qos import COMMAND, SENSOR
from std_msgs.msg import String
from std_srvs.srv import SetBool

from sim2real.deploy.cdr import (
    CdrError,
    patch_odometry_cdr,
    patch_twist_stamped_cdr,
    read_odometry_cdr,
    read_twist_stamped_cdr,
)
from sim2real.deploy.state import RobotState
from sim2real.export import verify_bundle
from sim2real.perturb.stream import StreamPerturber

NODE_NAME = "perturbation_node"
ODOMETRY_LAYOUT = {"position": 3, "attitude": 4, "velocity": 3, "gyro": 3}
EVENTS_TOPIC = "/bench/perturbation_events"
EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
"""Ground truth is not to be lost: reliable, with room for a burst of reports."""


def state_vector(state: RobotState) -> np.ndarray:
    """``[13]``: position, quaternion, world velocity, body rates (the ``ODOMETRY_LAYOUT`` order)."""
    return np.concatenate([state.pos, state.quat, state.vel, state.ang_vel_body])


def vector_state(vector: np.ndarray, stamp_ns: int) -> RobotState:
    """Inverse of :func:`state_vector`; the quaternion is renormalised (a zero one is left as is)."""
    v = np.asarray(vector, dtype=np.float64)
    quat = v[3:7]
    norm = np.linalg.norm(quat)
    return RobotState(v[0:3], quat / norm if norm > 0 else quat, v[7:10], v[10:13], stamp_ns)


def changed(message: np.ndarray, perturbed: np.ndarray) -> bool:
    """Whether the perturbations changed ``message``: compared at their precision (float32), so a message they
    left alone is forwarded byte for byte instead of after a float32 round trip."""
    return not np.array_equal(perturbed, message.astype(perturbed.dtype))


class PerturbationNode(Node):
    """The perturbation node; ``kwargs`` go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``...)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        spec_text = self.declare_parameter("spec", "").value
        spec = json.loads(spec_text) if spec_text.strip().startswith(("{", "[")) else (spec_text or None)
        self.robots = array_parameter(self, "robots", Parameter.Type.STRING_ARRAY)
        if not self.robots:
            raise ValueError("parameter 'robots' (the robot names, e.g. [cf1, cf2]) is required")
        seed = self.declare_parameter("seed", 0).value
        state_in = self.declare_parameter("state_in", "odom_raw").value
        state_out = self.declare_parameter("state_out", "odom").value
        command_in = self.declare_parameter("command_in", "").value
        command_out = self.declare_parameter("command_out", "cmd_vel").value
        self.twist_frame = self.declare_parameter("odom_twist_frame", "body").value
        act_dim, self.offset, self.scale = 0, None, None
        if command_in:
            bundle = self.declare_parameter("bundle", "").value
            if not bundle:
                raise ValueError("parameter 'bundle' is required with 'command_in' (the command scale)")
            contract = verify_bundle(bundle)["contract"]
            if contract["action_type"] != "vel":
                raise ValueError("the command hop carries geometry_msgs/TwistStamped: velocity policies only")
            self.offset = np.asarray(contract["command"]["offset"], dtype=np.float64)
            self.scale = np.asarray(contract["command"]["scale"], dtype=np.float64)
            act_dim = len(self.offset)
        n = len(self.robots)
        self.perturbers = [  # the node reports hit counts only: no ground-truth rows kept (memory, and time per hit)
            StreamPerturber(spec, ODOMETRY_LAYOUT, act_dim=act_dim, agent=i, num_agents=n, seed=seed, log_capacity=0)
            for i in range(n)
        ]
        self.kinds = {p.name: p.kind for p in self.perturbers[0].pipeline.items}
        self.counts: list[dict[str, int]] = [{} for _ in range(n)]
        self.pending: dict[tuple[int, str, str], int] = {}  # (agent, stream, name) -> hits since the last report
        self.state_publishers, self.command_publishers = [], []
        self.state_subscriptions, self.command_subscriptions = [], []
        for agent, robot in enumerate(self.robots):
            on_state = partial(self._on_state, agent)
            self.state_subscriptions.append(
                self.create_subscription(Odometry, f"{robot}/{state_in}", on_state, SENSOR, raw=True)
            )
            self.state_publishers.append(self.create_publisher(Odometry, f"{robot}/{state_out}", SENSOR))
            if command_in:
                on_command = partial(self._on_command, agent)
                self.command_subscriptions.append(
                    self.create_subscription(TwistStamped, f"{robot}/{command_in}", on_command, COMMAND, raw=True)
                )
                self.command_publishers.append(self.create_publisher(TwistStamped, f"{robot}/{command_out}", COMMAND))
        self.events_publisher = self.create_publisher(String, EVENTS_TOPIC, EVENTS)
        events_period_s = self.declare_parameter("events_period_s", 0.1).value
        if events_period_s <= 0:
            raise ValueError(f"parameter 'events_period_s' must be > 0 s, got {events_period_s}")
        self.create_timer(events_period_s, self._publish_events)
        self.create_service(SetBool, "~/set_enabled", self._on_set_enabled)
        explained = "; ".join(self.perturbers[0].pipeline.explain()) or "nothing (pass-through)"
        hops = f"{state_in} -> {state_out}" + (f", {command_in} -> {command_out}" if command_in else "")
        self.get_logger().info(f"{', '.join(self.robots)}: {hops}: {explained}")

    def _on_state(self, agent: int, data: bytes) -> None:
        """Robot ``agent``'s serialized odometry, with the other robots' that arrived with it (see :meth:`_burst`)."""
        self._burst(self._perturb_state, self.state_subscriptions, self.state_publishers, agent, data)

    def _on_command(self, agent: int, data: bytes) -> None:
        """Robot ``agent``'s serialized velocity command, with the other robots' that arrived with it."""
        self._burst(self._perturb_command, self.command_subscriptions, self.command_publishers, agent, data)

    @staticmethod
    def _burst(
        perturb: Callable[[int, bytes], bytes | None],
        subscriptions: list[Subscription],
        publishers: list[Publisher],
        agent: int,
        data: bytes,
    ) -> None:
        """Perturb robot ``agent``'s message and the other robots' that are waiting (a swarm driver publishes
        every robot at once), each on its own robot's stream as before, then forward what is delivered together:
        the node behind gets the swarm's messages as one burst (the policy node steps them in one inference)
        instead of one at a time, a perturbation apart."""
        burst = [(agent, data), *take_waiting(subscriptions, agent)]
        delivered = [(robot, out) for robot, message in burst if (out := perturb(robot, message)) is not None]
        for robot, out in delivered:
            publishers[robot].publish(out)

    def _perturb_state(self, agent: int, data: bytes) -> bytes | None:
        """Robot ``agent``'s serialized odometry, perturbed (None: dropped); unreadable bytes pass unchanged."""
        try:
            state = read_odometry_cdr(data, self.twist_frame)
        except CdrError as err:
            self._log_unread(agent, err)
            return data
        vector = state_vector(state)
        out = self.perturbers[agent].observe(vector)
        self._report(agent, "state")
        if out is None:
            return None
        if changed(vector, out):
            return patch_odometry_cdr(data, vector_state(out, state.stamp_ns), self.twist_frame)
        return data

    def _perturb_command(self, agent: int, data: bytes) -> bytes | None:
        """Robot ``agent``'s serialized velocity command, perturbed in action units (None: dropped)."""
        try:
            linear, _, _ = read_twist_stamped_cdr(data)
        except CdrError as err:
            self._log_unread(agent, err)
            return data
        action = (linear - self.offset) / self.scale
        out = self.perturbers[agent].command(action)
        self._report(agent, "command")
        if out is None:
            return None
        if changed(action, out):
            return patch_twist_stamped_cdr(data, self.offset + self.scale * out)
        return data

    def _log_unread(self, agent: int, err: CdrError) -> None:
        """Say (at most once a second) that robot ``agent``'s bytes could not be read and went on as they came."""
        self.get_logger().error(f"{self.robots[agent]}: passed on unperturbed: {err}", throttle_duration_sec=1.0)

    def _report(self, agent: int, stream: str) -> None:
        """Add the hits the last message added to robot ``agent``'s event log to the next report."""
        for name, count in self.perturbers[agent].log.counts().items():
            hits = count["events"] - self.counts[agent].get(name, 0)
            if hits > 0:
                self.counts[agent][name] = count["events"]
                key = (agent, stream, name)
                self.pending[key] = self.pending.get(key, 0) + hits

    def _publish_events(self) -> None:
        """Publish the pending hits as one JSON list (nothing when there are none)."""
        if not self.pending:
            return
        records = [
            {
                "robot": self.robots[agent],
                "stream": stream,
                "kind": self.kinds[name],
                "name": name,
                "hits": hits,
                "mean_magnitude": self.perturbers[agent].log.counts()[name]["mean_magnitude"],
            }
            for (agent, stream, name), hits in self.pending.items()
        ]
        self.pending = {}
        self.events_publisher.publish(String(data=json.dumps(records)))

    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        for perturber in self.perturbers:
            perturber.set_enabled(request.data)
        response.success = True
        response.message = f"perturbations {'on' if request.data else 'off'}"
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); 1 when its parameters are rejected."""
    return run_node(PerturbationNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
