"""``perturbation_node``: injects a perturbation spec between the robots' sensors and the policy.

Per robot ``R`` of ``robots``, it proxies ``R/<state_in>`` (``odom_raw``) to ``R/<state_out>`` (``odom``),
``nav_msgs/Odometry`` best effort, and, when ``command_in`` is set, ``R/<command_in>`` (``cmd_vel_raw``) to
``R/<command_out>`` (``cmd_vel``), ``geometry_msgs/TwistStamped`` reliable. Both are read from and written into
the serialized bytes (:mod:`sim2real.deploy.cdr`: no deserialization on the control path; headers, frame ids,
covariances and angular rates pass through). Bytes that are not such a message in little-endian CDR are
passed on untouched, with a throttled error in the log: the proxy hides nothing from the node behind it,
which has its own checks (the policy node fails safe). The messages go through a
:class:`sim2real.perturb.stream.BurstPerturber` (the same perturbation objects as the simulator): odometry as the
fields ``position`` [3] (world, m), ``attitude`` [4] (quaternion x, y, z, w;
renormalised after perturbation), ``velocity`` [3] (world, m/s) and ``gyro`` [3] (body, rad/s), so a
spec's sensor names (``fields: [position, velocity]``) mean the same as in simulation; commands in the
policy's action units (``command = offset + scale * action`` from the bundle's contract), so malicious
``random`` commands are uniform over the command box. A message the spec drops (dropout, loss bursts) is not
forwarded; a delayed one carries its original payload under the newest header. The perturbations compute in
float32, as in simulation; a message they leave as it was goes on byte for byte. ``dynamics.*`` kinds act in
the simulator and are rejected here.

Bursts: a swarm driver publishes every robot's state at once. A callback also takes the other robots' messages
waiting on the same hop, perturbs them as one burst, then forwards them together, so the node behind gets the
swarm's states at once and the policy node steps them in one inference instead of one per robot. On the
16-drone bench with this hop at normal scheduling this cut the policy node's CPU from 54 % to 43 % and raised the
achieved command rate from 76 % to 96 % (one 15 s run each, 2 cores). A spec of step-free perturbations (memoryless
kinds such as noise, bias or clipping, on the default schedule) perturbs a burst in one pipeline call over the
swarm; any other spec steps each robot's own stream, message by message, as its delays, dropouts and timing
faults count that robot's messages (:class:`~sim2real.perturb.stream.BurstPerturber`).

Warm-up (``warmup_lead_s``, default 2.5 ms; 0: off): that long before the next odometry burst is due, the node
perturbs a copy of the last one through a second perturber of the spec and publishes nothing, so the burst's
code is in the CPU caches when the burst comes (:mod:`s2r_ros.warmup`); the robots' streams and hit counts never
see the copies. Command bursts are not warmed. By default only on ``SCHED_FIFO`` (``realtime_priority``), where it
was measured to help (``warmup_realtime_only``).

Ground truth: every ``events_period_s`` (default 0.1 s) the hits since the last report go out on
``/bench/perturbation_events`` (``std_msgs/String``): a JSON list of ``{robot, stream, kind, name, hits,
mean_magnitude}``, one record per robot and perturbation that hit (``stream``: ``state`` or ``command``, the hop
it acts on; ``mean_magnitude`` is the mean over all its hits so far); nothing is sent when nothing hit. One
message per period, read from the perturbations' counts on a timer, keeps the node and the recorder off the
control path's CPU; the hits themselves are counted after each burst is forwarded, not before
(:meth:`~sim2real.perturb.stream.BurstPerturber.count_pending`). Hits after the last report before shutdown are
not sent.
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
from s2r_ros.housekeeping import HousekeepingTimers
from s2r_ros.parameters import array_parameter
from s2r_ros.qos import COMMAND, SENSOR
from s2r_ros.warmup import declare_warmup
from std_msgs.msg import String
from std_srvs.srv import SetBool

from sim2real.deploy.cdr import (
    CdrError,
    OdometryOffsets,
    patch_twist_stamped_cdr,
    read_odometry_rows,
    read_twist_stamped_cdr,
    write_odometry_rows,
)
from sim2real.export import verify_bundle
from sim2real.perturb.stream import BurstPerturber, acts_on_commands

NODE_NAME = "perturbation_node"
ODOMETRY_LAYOUT = {"position": 3, "attitude": 4, "velocity": 3, "gyro": 3}
EVENTS_TOPIC = "/bench/perturbation_events"
EVENTS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
"""Ground truth is not to be lost: reliable, with room for a burst of reports."""


def forwarded(
    messages: list[bytes],
    before: np.ndarray,
    after: list[np.ndarray | None],
    patch: Callable[[list[int], np.ndarray], list[bytes]],
) -> list[bytes | None]:
    """What goes on for each message ``k``: None where the perturbations delivered nothing (dropped, late), its
    bytes as they came where they changed nothing, else the bytes ``patch(ks, values)`` writes for all the changed
    ones at once. ``before[k]`` and ``after[k]`` are compared at the perturbations' precision (float32), so a
    message they left alone goes on byte for byte instead of after a float32 round trip. Compared as Python
    floats: a burst's few rows cost less so than in numpy calls (see :data:`sim2real.deploy.cdr.SMALL_BURST`)."""
    out: list[bytes | None] = [
        None if values is None else message for message, values in zip(messages, after, strict=True)
    ]
    delivered = [k for k, values in enumerate(after) if values is not None]
    if delivered:
        dtype = after[delivered[0]].dtype
        was = before.astype(dtype).tolist()
        ks = [k for k in delivered if after[k].tolist() != was[k]]  # NaN counts as changed
        if ks:
            for k, message in zip(ks, patch(ks, np.array([after[k] for k in ks])), strict=True):
                out[k] = message
    return out


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
        # the node reports hit counts only: no ground-truth rows kept (memory, and time per hit)
        perturber = partial(BurstPerturber, spec, ODOMETRY_LAYOUT, act_dim=act_dim, num_agents=n, seed=seed)
        self.perturber = perturber(log_capacity=0)
        self.last_states: tuple[list[int], list[bytes], list[int]] | None = None  # the last odometry burst
        self.offsets = OdometryOffsets()
        self.warmer = declare_warmup(self, self._warm)
        # the warm-ups go through a second perturber of the spec: the robots' streams never see them
        self.shadow = perturber(log_capacity=0) if self.warmer is not None else None
        self.kinds = {p.name: p.kind for p in self.perturber.pipeline.items}
        self.streams = {p.name: "command" if acts_on_commands(p) else "state" for p in self.perturber.pipeline.items}
        self.reported: list[dict[str, int]] = [{} for _ in range(n)]  # hits per robot and name in earlier reports
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
        self.housekeeping = HousekeepingTimers(self)  # between the odometry bursts
        self.housekeeping.create_timer(events_period_s, self._publish_events)
        self.create_service(SetBool, "~/set_enabled", self._on_set_enabled)
        explained = "; ".join(self.perturber.pipeline.explain()) or "nothing (pass-through)"
        hops = f"{state_in} -> {state_out}" + (f", {command_in} -> {command_out}" if command_in else "")
        self.get_logger().info(f"{', '.join(self.robots)}: {hops}: {explained}")

    def _on_state(self, agent: int, data: bytes) -> None:
        """Robot ``agent``'s serialized odometry, with the other robots' that arrived with it (see :meth:`_burst`)."""
        if self.warmer is not None:
            self.warmer.arrived()
        self.housekeeping.arrived()
        self._burst(self.state_subscriptions, self.state_publishers, agent, data, self.offsets, self._perturb_states)

    def _on_command(self, agent: int, data: bytes) -> None:
        """Robot ``agent``'s serialized velocity command, with the other robots' that arrived with it."""
        self._burst(
            self.command_subscriptions, self.command_publishers, agent, data, self._read_command, self._perturb_commands
        )

    def _burst(
        self,
        subscriptions: list[Subscription],
        publishers: list[Publisher],
        agent: int,
        data: bytes,
        read: Callable[[int, bytes], Any],
        perturb: Callable[[list[int], list[bytes], list[Any]], list[bytes | None]],
    ) -> None:
        """Perturb robot ``agent``'s message and the other robots' that are waiting (a swarm driver publishes
        every robot at once) as one burst of the :class:`BurstPerturber`, then forward what is delivered together:
        the node behind gets the swarm's messages at once (the policy node steps them in one inference) instead
        of one at a time, a perturbation apart. Bytes that cannot be read go on as they came."""
        burst = [(agent, data), *take_waiting(subscriptions, agent)]
        outgoing: list[bytes | None] = [message for _, message in burst]
        readable: list[tuple[int, int, bytes, Any]] = []  # (position in the burst, robot, bytes, what was read)
        for position, (robot, message) in enumerate(burst):
            try:
                readable.append((position, robot, message, read(robot, message)))
            except CdrError as err:
                self._log_unread(robot, err)
        if readable:
            positions, robots, messages, contents = zip(*readable, strict=True)
            for position, out in zip(positions, perturb(list(robots), list(messages), list(contents)), strict=True):
                outgoing[position] = out
        for (robot, _), out in zip(burst, outgoing, strict=True):
            if out is not None:
                publishers[robot].publish(out)
        self.perturber.count_pending()  # the ground truth's counting, now that the burst is out

    def _perturb_states(self, robots: list[int], data: list[bytes], offsets: list[int]) -> list[bytes | None]:
        """The robots' serialized odometry (``offsets``: where their doubles start), perturbed (None: dropped)."""
        self.last_states = (robots, data, offsets)
        return self._states_through(self.perturber, robots, data, offsets)

    def _warm(self) -> None:
        """The last odometry burst through the second perturber, nothing published (:mod:`s2r_ros.warmup`)."""
        if self.last_states is not None:
            self._states_through(self.shadow, *self.last_states)

    def _states_through(
        self, perturber: BurstPerturber, robots: list[int], data: list[bytes], offsets: list[int]
    ) -> list[bytes | None]:
        """What :meth:`_perturb_states` forwards, with ``perturber``."""
        rows = read_odometry_rows(data, offsets, self.twist_frame)
        outs = perturber.observe(robots, rows)

        def patch(ks: list[int], values: np.ndarray) -> list[bytes]:
            messages, at = [data[k] for k in ks], [offsets[k] for k in ks]
            return write_odometry_rows(messages, at, values, self.twist_frame, normalize=True)

        return forwarded(data, rows, outs, patch)

    def _read_command(self, robot: int, data: bytes) -> np.ndarray:
        """Robot ``robot``'s command's ``twist.linear`` ``[3]`` [m/s]."""
        return read_twist_stamped_cdr(data)[0]

    def _perturb_commands(self, robots: list[int], data: list[bytes], linear: list[np.ndarray]) -> list[bytes | None]:
        """The robots' serialized velocity commands, perturbed in action units (None: dropped)."""
        actions = (np.stack(linear) - self.offset) / self.scale
        outs = self.perturber.command(robots, actions)

        def patch(ks: list[int], values: np.ndarray) -> list[bytes]:
            return [
                patch_twist_stamped_cdr(data[k], self.offset + self.scale * v) for k, v in zip(ks, values, strict=True)
            ]

        return forwarded(data, actions, outs, patch)

    def _log_unread(self, agent: int, err: CdrError) -> None:
        """Say (at most once a second) that robot ``agent``'s bytes could not be read and went on as they came."""
        self.get_logger().error(f"{self.robots[agent]}: passed on unperturbed: {err}", throttle_duration_sec=1.0)

    def _publish_events(self) -> None:
        """Publish the hits since the last report as one JSON list (nothing when there are none). Read from the
        perturbations' counts here, on the timer, so the control path does no bookkeeping for it."""
        records = []
        for agent, robot in enumerate(self.robots):
            for name, count in self.perturber.counts(agent).items():
                hits = count["events"] - self.reported[agent].get(name, 0)
                if hits > 0:
                    self.reported[agent][name] = count["events"]
                    records.append(
                        {
                            "robot": robot,
                            "stream": self.streams[name],
                            "kind": self.kinds[name],
                            "name": name,
                            "hits": hits,
                            "mean_magnitude": count["mean_magnitude"],
                        }
                    )
        if records:
            self.events_publisher.publish(String(data=json.dumps(records)))

    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self.perturber.set_enabled(request.data)
        if self.shadow is not None:
            self.shadow.set_enabled(request.data)
        response.success = True
        response.message = f"perturbations {'on' if request.data else 'off'}"
        self.get_logger().info(response.message)
        return response


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); 1 when its parameters are rejected."""
    return run_node(PerturbationNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
