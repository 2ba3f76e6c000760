"""``sim_bridge_node``: the drone simulator exposed on the topics and QoS a real swarm driver uses.

Per robot ``R`` of ``robots`` (``cf1``..``cfN`` by default):

- publishes ``R/<state_topic>`` (``nav_msgs/Odometry``, best effort depth 1, REP 105: pose in ``world``,
  twist in the body frame; ``state_topic`` is ``odom``, or ``odom_raw`` when a perturbation node sits
  between the bridge and the policy), stamped when the state is measured (see the modes below) and
  serialized straight from numpy (:mod:`sim2real.deploy.cdr`). The bridge adds no sensor noise, so this is
  also the ground truth the bench's metrics use;
- publishes ``R/goal`` (``geometry_msgs/PoseStamped``, the robot's target; reliable, at ``goal_rate_hz`` and
  on change);
- subscribes ``R/cmd_vel`` (``geometry_msgs/TwistStamped``, world-frame m/s) for velocity policies or
  ``R/cmd_rpm`` (``std_msgs/Float32MultiArray``, RPM) for motor policies, reliable depth 1, both read from the
  serialized bytes; bytes that are not such a message are rejected and counted like an invalid command.

plus ``/clock`` (``rosgraph_msgs/Clock``, simulated time). The physics is :class:`sim2real.bench.bridge.BridgeSim`
(PyBullet by default; ``dynamics`` takes a ``dynamics.*`` perturbation spec as JSON; ``rate_hz`` > 0 steps
at another rate than the trained one). ``mode: realtime``
steps on a wall-clock timer at the env's control rate and stamps each state with the node's (system) clock
when the physics step that computed it has finished (a driver stamps a measurement when it is taken; the
simulator's own compute time is not part of the robot's loop);
``mode: lockstep`` stamps with the simulated time and steps as soon as every robot has answered the last odometry
(its command carries that stamp), or after ``lockstep_timeout_s`` of wall clock. In lock step the nodes that
read the stamps (the policy node) must run on simulated time (``use_sim_time: true``, from ``/clock``, which
goes out before the states it belongs to; in real time it goes out, with the goals, at the start of the next
period, so nothing holds a core after the states while their readers wake); commands are still timed out on the
wall clock.

Start-up: with ``hold_until_connected`` (default true) the simulation stands still, the robots held at their
initial states (published at the control rate, so nothing goes stale), until every robot's state topic has
``min_state_subscribers`` matched subscribers (default 1: the policy or the perturbation node; the bench adds
its recorder), its goal topic a subscriber and its command topic a publisher, the node ``recorder_node``
(default ``recorder_subscriptions``, where ``s2r_bench.recorder_node`` subscribes) subscribes to every topic of
``recorded_topics`` (absolute names; default none: the bench names every topic its metrics read, so a recorder
that discovers a topic late loses none of it), or ``connect_timeout_s`` has passed (then it warns what is
missing). It logs
``flying`` when the simulation starts: a bench measures from there, and its recording misses nothing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node, NodeNameNonExistentError
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from s2r_ros.executor import run_node
from s2r_ros.parameters import array_parameter
from s2r_ros.qos import COMMAND, SENSOR
from std_msgs.msg import Float32MultiArray

from sim2real.bench.bridge import BridgeSim
from sim2real.deploy.cdr import CdrError, SwarmOdometryWriter, read_float32_array_cdr, read_twist_stamped_cdr
from sim2real.deploy.codecs import fill_stamp
from sim2real.export import verify_bundle

NODE_NAME = "sim_bridge"
MODES = ("realtime", "lockstep")


def velocity_command(data: bytes) -> tuple[np.ndarray, int]:
    """A serialized ``TwistStamped``'s ``twist.linear`` ``[3]`` [m/s] and header stamp [ns]."""
    linear, _, stamp = read_twist_stamped_cdr(data)
    return linear, stamp


def rpm_command(data: bytes) -> tuple[np.ndarray, None]:
    """A serialized ``Float32MultiArray``'s motor speeds ``[4]`` [RPM] (unstamped)."""
    return read_float32_array_cdr(data), None


class SimBridgeNode(Node):
    """The sim bridge; ``kwargs`` go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``...)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        bundle = self.declare_parameter("bundle", "").value
        if not bundle:
            raise ValueError("parameter 'bundle' (the exported bundle whose env to simulate) is required")
        contract = verify_bundle(bundle)["contract"]
        dynamics = self.declare_parameter("dynamics", "").value
        self.sim = BridgeSim(
            contract["env_id"],
            dict(contract["env_params"]),
            backend=self.declare_parameter("backend", "pybullet").value,
            seed=self.declare_parameter("seed", 0).value,
            duration_s=self.declare_parameter("duration_s", 60.0).value,
            dynamics=json.loads(dynamics) if dynamics else None,
            command_timeout_s=self.declare_parameter("command_timeout_s", 0.5).value,
            rate_hz=self.declare_parameter("rate_hz", 0.0).value or None,
        )
        n = self.sim.num_agents
        self.robots = array_parameter(self, "robots", Parameter.Type.STRING_ARRAY) or [f"cf{i + 1}" for i in range(n)]
        if len(self.robots) != n:
            raise ValueError(f"the simulated swarm has {n} robots; parameter 'robots' names {len(self.robots)}")
        self.mode = self.declare_parameter("mode", "realtime").value
        if self.mode not in MODES:
            raise ValueError(f"parameter 'mode' must be one of {MODES}, got {self.mode!r}")
        self.world_frame = self.declare_parameter("world_frame", "world").value
        state_topic = self.declare_parameter("state_topic", "odom").value
        vel = contract["action_type"] == "vel"
        command_topic = self.declare_parameter("command_topic", "cmd_vel" if vel else "cmd_rpm").value
        command_type = TwistStamped if vel else Float32MultiArray

        self.state_publishers, self.goal_publishers, subscriptions = [], [], []
        self.odometry = SwarmOdometryWriter(self.world_frame, [f"{robot}/base_link" for robot in self.robots])
        for agent, robot in enumerate(self.robots):
            self.state_publishers.append(self.create_publisher(Odometry, f"{robot}/{state_topic}", SENSOR))
            self.goal_publishers.append(self.create_publisher(PoseStamped, f"{robot}/goal", COMMAND))
            on_command = partial(self._on_command_bytes, velocity_command if vel else rpm_command, agent)
            topic = f"{robot}/{command_topic}"
            subscriptions.append(self.create_subscription(command_type, topic, on_command, COMMAND, raw=True))
        self.clock_publisher = self.create_publisher(Clock, "/clock", SENSOR)
        self.answered = np.zeros(n, dtype=bool)
        self.last_stamp_ns = -1
        self.last_step_ns = 0
        self.lockstep_timeout_ns = int(self.declare_parameter("lockstep_timeout_s", 0.1).value * 1e9)
        self.goals = np.full((n, 3), np.nan)
        self.goal_period_ns = int(1e9 / self.declare_parameter("goal_rate_hz", 2.0).value)
        self.last_goal_ns = 0
        self.command_subscriptions = subscriptions
        self.flying = not self.declare_parameter("hold_until_connected", True).value
        self.min_state_subscribers = self.declare_parameter("min_state_subscribers", 1).value
        self.recorder_node = self.declare_parameter("recorder_node", "recorder_subscriptions").value
        self.recorded_topics = array_parameter(self, "recorded_topics", Parameter.Type.STRING_ARRAY)
        self.connect_deadline_ns = self._now_ns() + int(self.declare_parameter("connect_timeout_s", 30.0).value * 1e9)
        period = 1.0 / self.sim.ctrl_freq
        self.create_timer(period if self.mode == "realtime" else period / 4, self._on_timer)
        self._publish_states(self._now_ns())
        self.get_logger().info(
            f"{contract['env_id']} with {n} robots ({', '.join(self.robots)}) on {self.sim.env.backend} "
            f"at {self.sim.ctrl_freq:g} Hz, {self.mode}; state on */{state_topic}, commands on */{command_topic}"
        )

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_command_bytes(
        self, read: Callable[[bytes], tuple[np.ndarray, int | None]], agent: int, data: bytes
    ) -> None:
        """Robot ``agent``'s serialized command (raw subscription: no deserialization), read with ``read`` (values,
        header stamp); bytes that are not such a message are rejected (and counted) like an invalid command."""
        try:
            command, stamp = read(data)
        except CdrError as err:
            self.sim.rejected_commands += 1
            self.get_logger().warning(f"{self.robots[agent]}: rejected command: {err}", throttle_duration_sec=1.0)
            return
        self._on_command(agent, command, stamp)

    def _on_command(self, agent: int, command: np.ndarray, stamp: int | None) -> None:
        """Robot ``agent``'s command; ``stamp`` is its header stamp (None for unstamped RPM commands)."""
        now = self._now_ns()
        if not self.sim.set_command(agent, command, now):
            self.get_logger().warning(f"{self.robots[agent]}: rejected command {command.tolist()}", once=True)
            return
        if self.flying and self.mode == "lockstep" and (stamp is None or stamp == self.last_stamp_ns):
            self.answered[agent] = True
            if np.all(self.answered | ~self.sim.env.active[0]):
                self._step(now)

    def _on_timer(self) -> None:
        now = self._now_ns()
        if self.mode == "realtime":  # the last states' clock and goals, before this period's physics step
            self._publish_clock(self._sim_ns())
            self._publish_goals(now, now)
        if not self.flying:
            self._hold(now)
        elif self.mode == "realtime" or now - self.last_step_ns >= self.lockstep_timeout_ns:
            self._step(now)

    def _unconnected(self) -> list[str]:
        """The topics the flight waits for that have no matched peer yet."""
        needed = self.min_state_subscribers
        waiting = [p.topic_name for p in self.state_publishers if p.get_subscription_count() < needed]
        waiting += [p.topic_name for p in self.goal_publishers if not p.get_subscription_count()]
        waiting += [s.topic_name for s in self.command_subscriptions if not s.get_publisher_count()]
        if self.recorded_topics:
            recording = self._recorder_topics()
            missing = [topic for topic in self.recorded_topics if topic not in recording]
            waiting += [f"{topic} (by {self.recorder_node})" for topic in missing]
        return waiting

    def _recorder_topics(self) -> set[str]:
        """The topics ``recorder_node`` subscribes to (none while it is not on the graph)."""
        try:
            return {name for name, _ in self.get_subscriber_names_and_types_by_node(self.recorder_node, "/")}
        except NodeNameNonExistentError:
            return set()

    def _hold(self, now: int) -> None:
        """Publish the held initial states until everything is connected (or the timeout), then start flying."""
        waiting = self._unconnected()
        if waiting and now < self.connect_deadline_ns:
            self._publish_states(now)
            return
        if waiting:
            self.get_logger().warning(f"starting although these topics have no peer yet: {', '.join(waiting)}")
        self.flying, self.last_goal_ns = True, 0  # the goals go out again once flying
        self.get_logger().info("flying: every robot's topics are connected" if not waiting else "flying")
        self._step(now)

    def _step(self, now: int) -> None:
        self.sim.step(now)
        self.answered[:] = False
        self.last_step_ns = now
        self._publish_states(self._now_ns())  # the states are measured now, after the physics step

    def _sim_ns(self) -> int:
        """The simulated time of the latest state [ns]."""
        return round(self.sim.time_s * 1e9)

    def _publish_states(self, now: int) -> None:
        """Publish every robot's state, measured at ``now`` [ns, wall clock].

        In lock step ``/clock`` goes out before the states (the nodes on simulated time read it) and the goals
        after them. In real time both go out at the start of the next period (:meth:`_on_timer`), before its
        physics step: nothing on the control path reads them, and published here they would hold a core while
        the states' readers wake (the first state reached the recorder 0.05-0.1 ms later at the p50).
        """
        sim_ns = self._sim_ns()
        lockstep = self.mode == "lockstep"
        stamp = self.last_stamp_ns = sim_ns if lockstep else now
        if lockstep:
            self._publish_clock(sim_ns)
        messages = self.odometry.encode_rows(self.sim.state_rows(), stamp)
        for publisher, message in zip(self.state_publishers, messages, strict=True):
            publisher.publish(message)
        if lockstep:
            self._publish_goals(now, stamp)

    def _publish_goals(self, now: int, stamp: int) -> None:
        """Publish every robot's goal, stamped ``stamp`` [ns], when one changed or ``goal_rate_hz``'s period has
        passed since they last went out (``now``: wall clock [ns])."""
        goals = self.sim.targets()
        if now - self.last_goal_ns >= self.goal_period_ns or not np.allclose(goals, self.goals):
            self.goals, self.last_goal_ns = goals, now
            for agent, goal in enumerate(goals):
                msg = PoseStamped()
                msg.header.frame_id = self.world_frame
                fill_stamp(msg.header.stamp, stamp)
                msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in goal)
                msg.pose.orientation.w = 1.0
                self.goal_publishers[agent].publish(msg)

    def _publish_clock(self, sim_ns: int) -> None:
        """Publish the simulated time ``sim_ns`` [ns] on ``/clock``."""
        clock = Clock()
        fill_stamp(clock.clock, sim_ns)
        self.clock_publisher.publish(clock)

    def destroy_node(self) -> None:
        self.sim.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0); 1 when its parameters are rejected."""
    return run_node(SimBridgeNode, NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
