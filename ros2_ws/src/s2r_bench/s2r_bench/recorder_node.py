"""Record the topics of a bench run into a rosbag2 MCAP directory, without rosbag2.

The node polls the graph every ``discovery_period_s`` and, for each wanted topic that has a publisher,
subscribes with ``raw=True`` (CDR bytes, never deserialised). Every ``take_period_s`` (or on each message of
``beat_topic``, below) it takes what has arrived on each subscription and hands the bytes to the pure-Python
``rosbags`` rosbag2 writer (MCAP storage, Kilted typestore). The bag opens with ``rosbags``, ``mcap`` +
``mcap-ros2-support`` and ``ros2 bag``.

- Taking in batches: the subscriptions belong to a second node, ``<name>_subscriptions`` (the sim bridge's
  ``recorder_node`` waits for it), that no executor spins, so no message wakes the recorder; the samples wait
  in the middleware (KEEP_LAST ``qos_depth`` per topic) until the next take. The recorder wakes once per take
  (``1 / take_period_s`` times a second, or once per beat) instead of once per message (1300 messages/s on the
  4-drone bench at 100 Hz), which leaves the cores to the control loop it measures.
- Timestamp of each record: the middleware's receive time of the sample (``MessageInfo.received_timestamp``,
  CLOCK_REALTIME, set by Fast DDS when the sample arrives in this process), never sim time, so the recorder's
  own queueing is not part of it; ``time.time_ns()`` at the take where an rmw leaves it at 0. Records go into
  the bag in receive-time order across topics.
- Taking on a beat: with ``beat_topic`` set, each message on that topic makes the recorder take (and discover,
  once ``discovery_period_s`` has passed) instead of its timers, so its work falls where the beat puts it. The
  bench sets ``/clock``, which the sim bridge publishes in real time at the start of each control period, before
  its physics step: the control path is idle then. On its own timer the take's phase against the control period
  is whatever start-up left; where it fell between a state and its command, the command waited for it (4 drones
  with the perturbation hop at 100 Hz, ``SCHED_FIFO``: latency p99 2.9-3.3 ms in the periods with a take in
  that window against 1.9-2.1 ms in the others, two runs). While the beat is silent for ``discovery_period_s``
  (before its publisher starts or after it stops), a timer at that period takes and discovers.
- QoS of a recording subscription: decided when the topic's first publisher is seen. RELIABLE only if every
  publisher is reliable (a reliable reader cannot match a best-effort writer), TRANSIENT_LOCAL only if every
  publisher is, KEEP_LAST ``qos_depth``.
- Topics: ``topics`` (exact names) if set, else every discovered topic matching ``topic_regex``; topics matching
  ``exclude_regex`` never. A type missing from the typestore or not importable is skipped with a warning.
- SIGINT/SIGTERM: spinning stops and the bag is closed (MCAP footer + ``metadata.yaml``) with further SIGINT/SIGTERM
  ignored, so it is always readable; only SIGKILL (or a crash) can leave an unreadable bag.

Parameters: ``output_dir`` (str, the bag directory to create), ``topics`` (string array), ``topic_regex``,
``exclude_regex``, ``beat_topic`` (str), ``discovery_period_s``, ``take_period_s`` (float, s), ``qos_depth``
(int). See ``config/recorder.yaml``.

Run: ``python -m s2r_bench.recorder_node --ros-args -p output_dir:=runs/x/bag`` or ``s2r_bench_recorder ...``.
"""

from __future__ import annotations

import bisect
import importlib
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription
from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, TypesysError, get_typestore
from s2r_ros.executor import run_node
from s2r_ros.parameters import array_parameter

BAG_VERSION = 9


def message_class(msgtype: str) -> type:
    """The Python message class of a ROS type name such as ``std_msgs/msg/String``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _never_called(_: bytes) -> None:
    """The callback rclpy requires of a subscription whose samples are taken, not delivered."""


def recording_qos(publisher_qos: list[QoSProfile], depth: int) -> QoSProfile:
    """A subscription QoS that matches every given publisher QoS, as reliable and durable as they all allow."""
    reliable = all(qos.reliability == ReliabilityPolicy.RELIABLE for qos in publisher_qos)
    latched = all(qos.durability == DurabilityPolicy.TRANSIENT_LOCAL for qos in publisher_qos)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class RecorderNode(Node):
    """Raw subscriptions to the wanted topics, written to one rosbag2 MCAP bag, closed by ``destroy_node()``;
    ``kwargs`` go to ``rclpy.node.Node`` (``context``, ``parameter_overrides``...)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("recorder", **kwargs)
        output_param = self.declare_parameter("output_dir", "").value
        if not output_param:
            raise ValueError("parameter output_dir (the bag directory to create) is required")
        output_dir = Path(output_param)
        self._topics = set(array_parameter(self, "topics", Parameter.Type.STRING_ARRAY))  # empty: every topic
        self._include = re.compile(self.declare_parameter("topic_regex", "").value)
        self._exclude = re.compile(self.declare_parameter("exclude_regex", "^/(rosout|parameter_events)$").value)
        self._depth = int(self.declare_parameter("qos_depth", 100).value)
        self._beat_topic = self.declare_parameter("beat_topic", "").value
        discovery_period_s = float(self.declare_parameter("discovery_period_s", 0.1).value)
        take_period_s = float(self.declare_parameter("take_period_s", 0.01).value)
        if not (discovery_period_s > 0 and take_period_s > 0):
            raise ValueError(
                f"discovery_period_s ({discovery_period_s}) and take_period_s ({take_period_s}) must be > 0 s"
            )

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(output_dir, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._output_dir = output_dir
        self._subscriber = Node(f"{self.get_name()}_subscriptions", context=self.context)  # never spun
        self._recording: dict[str, tuple[Subscription, Connection]] = {}
        self._skipped: set[str] = set()
        self._pending: list[tuple[int, Connection, bytes]] = []  # taken, not yet written: (receive ns, ...)
        self.message_count = 0
        self._discovery_period_s = discovery_period_s
        self._beat: Subscription | None = None  # on beat_topic, spun: its messages start the takes
        self._last_beat_s = self._last_discovery_s = -float("inf")  # time.monotonic() [s]
        if self._beat_topic:
            self.create_timer(discovery_period_s, self._without_beat)
        else:
            self.create_timer(discovery_period_s, self._discover)
            self.create_timer(take_period_s, self._take)
        self._discover()
        self.get_logger().info(f"recording to {output_dir}")

    def _wanted(self, topic: str) -> bool:
        if self._exclude.pattern and self._exclude.search(topic):
            return False
        if self._topics:
            return topic in self._topics
        return bool(self._include.search(topic))

    def _discover(self) -> None:
        self._last_discovery_s = time.monotonic()
        for topic, types in self.get_topic_names_and_types():
            beat = topic == self._beat_topic and self._beat is None
            record = topic not in self._recording and topic not in self._skipped and self._wanted(topic)
            if not (beat or record):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # decide the QoS once a publisher shows up
            if len(types) != 1:
                self.get_logger().warning(f"not recording or following {topic}: it carries several types {types}")
                self._skipped.add(topic)
                if beat:
                    self._beat_topic = ""  # the timer goes on taking
                continue
            qos = recording_qos([info.qos_profile for info in publishers], self._depth)
            if record:
                self._subscribe(topic, types[0], qos)
            if beat:
                self._follow_beat(topic, types[0], qos)

    def _follow_beat(self, topic: str, msgtype: str, qos: QoSProfile) -> None:
        """Take on every message of ``topic`` from now on (a type that cannot be imported leaves the timer)."""
        try:
            msg_class = message_class(msgtype)
        except (ImportError, AttributeError) as err:
            self.get_logger().warning(f"taking on a timer: beat topic {topic} has a type unknown here ({err!r})")
            self._beat_topic = ""
            return
        self._beat = self.create_subscription(msg_class, topic, self._on_beat, qos, raw=True)
        self.get_logger().info(f"taking on each message of {topic}")

    def _on_beat(self, _: bytes) -> None:
        """A message on ``beat_topic``: take, and discover once ``discovery_period_s`` has passed."""
        self._last_beat_s = time.monotonic()
        self._take()
        if self._last_beat_s - self._last_discovery_s >= self._discovery_period_s:
            self._discover()

    def _without_beat(self) -> None:
        """Every ``discovery_period_s`` with a ``beat_topic``: take and discover if no beat came meanwhile."""
        if time.monotonic() - self._last_beat_s >= self._discovery_period_s:
            self._take()
            self._discover()

    def _subscribe(self, topic: str, msgtype: str, qos: QoSProfile) -> None:
        try:
            msg_class = message_class(msgtype)
            connection = self._writer.add_connection(topic, msgtype, typestore=self._typestore)
        except (ImportError, AttributeError, TypesysError) as err:
            self.get_logger().warning(f"not recording {topic}: type {msgtype} is unknown here ({err!r})")
            self._skipped.add(topic)
            return

        # no callback runs: the node is never spun and _take takes the samples
        subscription = self._subscriber.create_subscription(msg_class, topic, _never_called, qos, raw=True)
        self._recording[topic] = (subscription, connection)
        self.get_logger().info(f"recording {topic} [{msgtype}] {qos.reliability.name} {qos.durability.name}")

    def _take(self) -> None:
        """Write what has arrived, in receive-time order across topics.

        A sample received before this take started is taken by it, since every take comes after; one received
        later may still be overtaken by a sample of another topic taken next time, so it waits for that take.
        """
        started_ns = time.time_ns()
        self._collect()
        self._write(bisect.bisect_left(self._pending, started_ns, key=lambda record: record[0]))

    def _collect(self) -> None:
        """Move every sample waiting in the recording subscriptions to ``_pending``, sorted by receive time."""
        for subscription, connection in self._recording.values():
            while (taken := subscription.handle.take_message(subscription.msg_type, True)) is not None:
                data, info = taken
                self._pending.append((info["received_timestamp"] or time.time_ns(), connection, data))
        self._pending.sort(key=lambda record: record[0])

    def _write(self, count: int) -> None:
        """Write the first ``count`` pending samples to the bag."""
        for received_ns, connection, data in self._pending[:count]:
            self._writer.write(connection, received_ns, data)
        self.message_count += count
        del self._pending[:count]

    def destroy_node(self) -> None:
        """Close the bag (footer and ``metadata.yaml``), ignoring further SIGINT/SIGTERM meanwhile, then the node."""
        # a second signal (the launcher escalating) must not cut the bag's footer short; SIGKILL still can
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.close()
        super().destroy_node()

    def close(self) -> None:
        """Write the bag's footer and ``metadata.yaml``; no message is recorded afterwards."""
        # not the node's logger: after a signal the context is shut down and its /rosout publisher is gone
        logger = rclpy.logging.get_logger("s2r_bench.recorder")
        try:
            self._collect()
        except Exception as err:  # whatever the middleware says at shutdown, the bag is closed readable
            logger.warning(f"the samples that arrived since the last take are lost: {err!r}")
        self._write(len(self._pending))
        self._recording.clear()
        self._subscriber.destroy_node()
        self._writer.close()
        logger.info(f"closed {self._output_dir}: {self.message_count} messages")


def main(args: list[str] | None = None) -> int:
    """Record until SIGINT or SIGTERM, then close the bag (exit 0); 1 when the parameters are rejected."""
    return run_node(RecorderNode, "recorder", args)


if __name__ == "__main__":
    sys.exit(main())
