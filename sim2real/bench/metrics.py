"""Bench metrics from a recorded bench bag (rosbag2 MCAP directory), per robot and overall, into ``summary.json``.

ROS-free: the bag is read with ``rosbags.highlevel.AnyReader``. Every time below is a record's receive time
in the bag (ns) or a message's ``header.stamp``.

Topic conventions (crazyswarm2 style, robot ``R`` such as ``cf1``; names configurable with :class:`BenchTopics`):
``/R/odom`` observations (``nav_msgs/Odometry``), ``/R/cmd_vel`` (``geometry_msgs/TwistStamped``) or ``/R/cmd_rpm``
(``std_msgs/Float32MultiArray``) commands, ``/R/truth`` ground truth (``nav_msgs/Odometry`` or
``geometry_msgs/PoseStamped``; the bench names the sim bridge's unperturbed odometry instead),
``/diagnostics`` (``diagnostic_msgs/DiagnosticArray``) and ``/bench/perturbation_events`` (``std_msgs/String``
holding JSON). A robot is any namespace with an observation
or command topic.

Definitions:

- **Latency** (ms): the policy node copies the stamp of the odometry that produced a command into the command's
  header. Latency = the command's receive time in the bag - its ``header.stamp``. Both are on the same host's wall
  clock (CLOCK_REALTIME; the stamping node must not use sim time), so this is observation stamp -> command
  arrival, including every hop in between. The bench recorder's receive time is the middleware's receive time
  of the sample in the recorder's process, so the recorder's own queueing is not in it (its receive thread's
  wake-up is: on the 2-core bench with every process at one ``SCHED_FIFO`` priority it waits for a free core, and
  commands reached the recorder 0.10 ms (p50) and 0.32 ms (p99) after they were sent). Only the first command
  with a given stamp counts (later ones are ``repeated``, e.g. a command held by a failsafe); when the robot's
  observations are in the bag, a command whose stamp matches no observation (the watchdog's safe commands,
  stamped with the time they were sent) is ``unmatched`` and not a latency sample. With a latency window
  (``latency_from_ns``; the bench: the flight's start), answers received before it are ``before_window`` and not
  samples either: the bench's hold before the flight, where the nodes start up and the recorder may discover a
  topic seconds late, is not in the figures. Commands without a header (``cmd_rpm``) give no latency. p50/p99
  interpolate linearly between order statistics (numpy's default).
- **Latency by stage** (ms), when :class:`BenchTopics` names the per-robot ``stages`` a state passes through before
  the command (the bench: ``odom_raw``, the sim bridge's odometry before the perturbation hop, then ``odom``):
  each latency sample is split at the first receive time of its stamp on each stage topic, into ``stamp ->
  odom_raw`` (the driver's publish and the transport), ``odom_raw -> odom`` (the hop) and ``odom -> command``
  (the policy). Only samples whose stamp reached every stage topic count, so a sample's stages add up to its
  latency; the percentiles of the stages do not add up to the latency's.
- **Rate** (Hz): ``(count - 1) / (last - first receive time)`` per topic.
- **Drops**, for topics given a nominal rate ``f`` (period ``T = 1/f``): message times are the header stamps when
  the type has a header (publisher-side times: free of transport jitter) else receive times, sorted; a gap of
  ``k`` periods (gap / T rounded to the nearest integer) counts ``k - 1`` missed messages. ``drop_rate = drops /
  (count + drops)``. Messages lost before the first or after the last one received are not seen.
- **Diagnostics**, per ``DiagnosticStatus`` (robot = ``hardware_id``): reports per level (OK, WARN, ERROR, STALE;
  the level is a ``byte``, an int here), ``stale_reports``, the last reported value of every integer KeyValue
  (the policy node's cumulative counters, e.g. ``safe_commands``, ``entries_stale``) and ``failsafe_entries`` =
  the sum of the ``entries_*`` counters.
- **Tracking error** (m): Euclidean distance from a robot's ground-truth position to its target (given per robot),
  mean, max and final over its truth messages; overall: the mean of the robots' means and the largest max.
- **Separation** (m): truth positions of different robots with the same ``header.stamp`` are compared; the
  minimum pairwise distance, and with ``collision_distance_m`` the number of collisions = times a pair comes
  closer than that distance (a pair that stays close counts once).
- **Perturbation events**: each message on the events topic holds one JSON record or a JSON list of them (the
  perturbation node's reports); a record is an object with ``"kind"`` and ``"hits"`` (1 when absent). ``messages``
  counts the messages, ``count`` the records, ``hits`` their hits and ``by_kind`` the hits per kind; a message that
  is not JSON, or a record without a kind, counts one hit of kind ``"unknown"``.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from sim2real.deploy.codecs import stamp_to_ns

DIAGNOSTIC_LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
FAILSAFE_COUNTER_PREFIX = "entries_"
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class BenchTopics:
    """Names of the bench topics: per-robot names (under ``/<robot>/``) and global topics."""

    observation: str = "odom"
    commands: tuple[str, ...] = ("cmd_vel", "cmd_rpm")
    stages: tuple[str, ...] = ()
    """Per-robot topics a state passes through, in order, before the command: the latency by stage."""
    truth: str = "truth"
    diagnostics: str = "/diagnostics"
    perturbation_events: str = "/bench/perturbation_events"


@dataclass
class TopicRecord:
    """What the metrics keep of one topic: receive times and, for types with a header, stamps (ns)."""

    msgtype: str
    recv_ns: list[int] = field(default_factory=list)
    stamp_ns: list[int] = field(default_factory=list)


@dataclass
class BagContents:
    """One pass over a bench bag.

    Attributes:
        topics: every topic's record.
        truth: robot -> ``header.stamp`` (ns) -> ground-truth position ``[3]`` (m).
        diagnostics: ``(robot, level, {key: value})`` per ``DiagnosticStatus``, in bag order.
        perturbation_messages: messages on the events topic.
        perturbation_hits: ``(kind, hits)`` per event record (kind None when it has none).
    """

    topics: dict[str, TopicRecord] = field(default_factory=dict)
    truth: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    diagnostics: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    perturbation_messages: int = 0
    perturbation_hits: list[tuple[str | None, int]] = field(default_factory=list)


def split_robot_topic(topic: str) -> tuple[str, str] | None:
    """``"/cf1/odom"`` -> ``("cf1", "odom")``; None for a topic that is not ``/<robot>/<name>``."""
    parts = topic.strip("/").split("/")
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _position(msg: Any) -> np.ndarray:
    """Position ``[3]`` (m) of an ``Odometry`` or a ``PoseStamped``."""
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    return np.array([pose.position.x, pose.position.y, pose.position.z], dtype=np.float64)


def _event_hits(data: str) -> list[tuple[str | None, int]]:
    """``(kind, hits)`` per record of a perturbation events message; ``[(None, 1)]`` if it is not JSON."""
    try:
        records = json.loads(data)
    except json.JSONDecodeError:
        return [(None, 1)]
    out = []
    for record in records if isinstance(records, list) else [records]:
        is_record = isinstance(record, dict)
        kind = record.get("kind") if is_record else None
        out.append((kind, int(record.get("hits", 1)) if is_record and kind is not None else 1))
    return out


def read_bag(bag_dir: str | Path, topics: BenchTopics | None = None) -> BagContents:
    """Read a bench bag once, keeping only what the metrics need (``topics``: default :class:`BenchTopics`)."""
    topics = topics or BenchTopics()
    contents = BagContents()
    with AnyReader([Path(bag_dir)]) as reader:
        for connection, recv_ns, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            record = contents.topics.setdefault(connection.topic, TopicRecord(connection.msgtype))
            record.recv_ns.append(recv_ns)
            header = getattr(msg, "header", None)
            if header is not None:
                record.stamp_ns.append(stamp_to_ns(header.stamp))
            robot_topic = split_robot_topic(connection.topic)
            if robot_topic is not None and robot_topic[1] == topics.truth:
                contents.truth.setdefault(robot_topic[0], {})[stamp_to_ns(header.stamp)] = _position(msg)
            elif connection.topic == topics.diagnostics:
                for status in msg.status:
                    values = {kv.key: kv.value for kv in status.values}
                    contents.diagnostics.append((status.hardware_id or status.name, int(status.level), values))
            elif connection.topic == topics.perturbation_events:
                contents.perturbation_messages += 1
                contents.perturbation_hits += _event_hits(msg.data)
    return contents


def latency_stats(latencies_ms: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99, max and mean of latencies (ms); None values when there are none."""
    if not latencies_ms:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    values = np.asarray(latencies_ms, dtype=np.float64)
    return {
        "count": int(values.size),
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
        "mean_ms": float(values.mean()),
    }


def answered_commands(
    commands: Sequence[TopicRecord], observation_stamps: set[int] | None, from_ns: int | None = None
) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """A robot's answered commands as ``(receive ns, stamp ns)`` and the count of each kind of command (see the
    module docstring); a latency is ``(receive - stamp) / 1e6`` ms.

    Args:
        commands: the robot's command topics; only those with header stamps give latencies.
        observation_stamps: stamps (ns) of the robot's observations in the bag, None if it has none there.
        from_ns: the latency window's start (receive time, ns); None: the whole bag.

    Returns:
        the answered commands in the window in receive order, and ``{"answered", "repeated", "unmatched",
        "before_window"}`` command counts.
    """
    stamped = [record for record in commands if record.stamp_ns]
    arrivals = sorted(pair for record in stamped for pair in zip(record.recv_ns, record.stamp_ns, strict=True))
    seen: set[int] = set()
    answered: list[tuple[int, int]] = []
    counts = {"answered": 0, "repeated": 0, "unmatched": 0, "before_window": 0}
    for recv, stamp in arrivals:
        if stamp in seen:
            counts["repeated"] += 1
        elif observation_stamps is not None and stamp not in observation_stamps:
            counts["unmatched"] += 1
        elif from_ns is not None and recv < from_ns:
            seen.add(stamp)
            counts["before_window"] += 1
        else:
            seen.add(stamp)
            answered.append((recv, stamp))
            counts["answered"] += 1
    return answered, counts


def first_arrivals(record: TopicRecord) -> dict[int, int]:
    """Stamp (ns) -> the first receive time (ns) of a message with that stamp on a topic with headers."""
    first: dict[int, int] = {}
    for recv, stamp in zip(record.recv_ns, record.stamp_ns, strict=True):
        if stamp not in first or recv < first[stamp]:
            first[stamp] = recv
    return first


def stage_latencies(answered: Sequence[tuple[int, int]], stages: Sequence[TopicRecord]) -> np.ndarray:
    """Answered commands ``(receive ns, stamp ns)`` split at their stamp's first arrival on each stage topic, in
    order: ``[samples, len(stages) + 1]`` ms (stamp -> first stage, ..., last stage -> command). Commands whose
    stamp is missing from a stage topic are left out."""
    arrivals = [first_arrivals(record) for record in stages]
    rows = [
        [stamp, *(first[stamp] for first in arrivals), recv]
        for recv, stamp in answered
        if all(stamp in first for first in arrivals)
    ]
    return np.diff(np.asarray(rows, dtype=np.int64).reshape(-1, len(stages) + 2), axis=1) / 1e6


def stage_names(stages: Sequence[str]) -> list[str]:
    """The labels of :func:`stage_latencies`' columns: ``stamp -> odom_raw``, ``odom_raw -> odom``, ...,
    ``odom -> command``."""
    points = ["stamp", *stages, "command"]
    return [f"{a} -> {b}" for a, b in itertools.pairwise(points)]


def stage_stats(per_robot: Sequence[np.ndarray], stages: Sequence[str]) -> dict[str, dict[str, Any]] | None:
    """:func:`latency_stats` of each stage over every robot's :func:`stage_latencies`, keyed by
    :func:`stage_names`; None without ``stages``."""
    if not stages:
        return None
    samples = np.concatenate([*per_robot, np.empty((0, len(stages) + 1))])
    return {name: latency_stats(samples[:, k].tolist()) for k, name in enumerate(stage_names(stages))}


def missed_periods(times_ns: Sequence[int], rate_hz: float) -> int:
    """Messages missing from a stream at ``rate_hz``: a gap of ``k`` periods (rounded) misses ``k - 1``."""
    if len(times_ns) < 2:
        return 0
    gaps_s = np.diff(np.sort(np.asarray(times_ns, dtype=np.int64))) / NS_PER_S
    periods = np.floor(gaps_s * rate_hz + 0.5)
    return int(np.maximum(periods - 1, 0).sum())


def topic_stats(record: TopicRecord, nominal_rate_hz: float | None) -> dict[str, Any]:
    """Count, duration (s), achieved rate (Hz) and, with a nominal rate, drops of one topic."""
    count = len(record.recv_ns)
    duration_s = (max(record.recv_ns) - min(record.recv_ns)) / NS_PER_S
    stats: dict[str, Any] = {
        "msgtype": record.msgtype,
        "count": count,
        "duration_s": duration_s,
        "rate_hz": (count - 1) / duration_s if duration_s > 0 else None,
    }
    if nominal_rate_hz is not None:
        times = record.stamp_ns if record.stamp_ns else record.recv_ns
        drops = missed_periods(times, nominal_rate_hz)
        stats |= {"nominal_rate_hz": nominal_rate_hz, "drops": drops, "drop_rate": drops / (count + drops)}
    return stats


def diagnostics_stats(reports: Sequence[tuple[str, int, dict[str, str]]]) -> dict[str, dict[str, Any]]:
    """Per robot: reports per level, stale reports, last integer counters and failsafe entries."""
    per_robot: dict[str, dict[str, Any]] = {}
    for robot, level, values in reports:
        stats = per_robot.setdefault(robot, {"reports": 0, "levels": Counter(), "counters": {}})
        stats["reports"] += 1
        stats["levels"][DIAGNOSTIC_LEVELS.get(level, str(level))] += 1
        stats["counters"] |= {key: int(value) for key, value in values.items() if value.lstrip("-").isdigit()}
    for stats in per_robot.values():
        stats["levels"] = dict(stats["levels"])
        stats["stale_reports"] = stats["levels"].get("STALE", 0)
        entries = [v for key, v in stats["counters"].items() if key.startswith(FAILSAFE_COUNTER_PREFIX)]
        stats["failsafe_entries"] = sum(entries) if entries else None
    return per_robot


def tracking_stats(positions: Sequence[np.ndarray], target: Sequence[float]) -> dict[str, float | int]:
    """Distance (m) from each position ``[3]`` to ``target [3]``: mean, max, final, sample count."""
    errors = np.linalg.norm(np.asarray(positions) - np.asarray(target, dtype=np.float64), axis=-1)
    return {
        "samples": int(errors.size),
        "mean_m": float(errors.mean()),
        "max_m": float(errors.max()),
        "final_m": float(errors[-1]),
    }


def separation_stats(
    truth: Mapping[str, Mapping[int, np.ndarray]], collision_distance_m: float | None
) -> dict[str, Any]:
    """Minimum distance (m) between robots at equal truth stamps and, with a distance, the collision count."""
    stamps = sorted(set().union(*(positions.keys() for positions in truth.values())))
    min_separation = None
    close_pairs: set[tuple[str, str]] = set()
    collisions = 0
    for stamp in stamps:
        present = sorted(robot for robot, positions in truth.items() if stamp in positions)
        for a, b in itertools.combinations(present, 2):
            distance = float(np.linalg.norm(truth[a][stamp] - truth[b][stamp]))
            min_separation = distance if min_separation is None else min(min_separation, distance)
            if collision_distance_m is None:
                continue
            if distance < collision_distance_m and (a, b) not in close_pairs:
                collisions += 1
                close_pairs.add((a, b))
            elif distance >= collision_distance_m:
                close_pairs.discard((a, b))
    stats: dict[str, Any] = {"min_separation_m": min_separation}
    if collision_distance_m is not None:
        stats |= {"collision_distance_m": collision_distance_m, "collisions": collisions}
    return stats


def _nominal_rate(topic: str, nominal_rates: Mapping[str, float]) -> float | None:
    return next((rate for pattern, rate in nominal_rates.items() if fnmatch.fnmatchcase(topic, pattern)), None)


def compute_metrics(
    bag_dir: str | Path,
    *,
    nominal_rates: Mapping[str, float] | None = None,
    targets: Mapping[str, Sequence[float]] | None = None,
    collision_distance_m: float | None = None,
    hold_from_ns: int | None = None,
    latency_from_ns: int | None = None,
    topics: BenchTopics | None = None,
    contents: BagContents | None = None,
) -> dict[str, Any]:
    """Bench metrics of one bag (definitions in the module docstring).

    Args:
        bag_dir: the rosbag2 directory written by the recorder node.
        nominal_rates: Hz per topic name or ``fnmatch`` pattern (first match wins), e.g. ``{"/*/odom": 100.0}``;
            drops are counted for those topics only.
        targets: robot -> target position ``[3]`` (m, world frame) for the tracking error.
        collision_distance_m: robots closer than this (m) collide; None: only the minimum separation.
        hold_from_ns: the tracking error uses ground truth stamped at or after this time (ns; the hold window
            after the take-off transient); None: all of it.
        latency_from_ns: latencies (and their stages) come from commands received at or after this time (ns;
            the flight's start); None: every command in the bag.
        topics: the bench topic names (default :class:`BenchTopics`).
        contents: the bag as :func:`read_bag` already read it (with the same ``topics``); None: read ``bag_dir``.

    Returns:
        ``{"bag", "overall", "robots", "topics", "perturbation_events"}``, JSON-ready.
    """
    topics = topics or BenchTopics()
    contents = contents or read_bag(bag_dir, topics)
    nominal_rates = nominal_rates or {}
    targets = targets or {}
    robot_topics: dict[str, dict[str, TopicRecord]] = {}
    for topic, record in contents.topics.items():
        robot_topic = split_robot_topic(topic)
        if robot_topic is not None:
            robot_topics.setdefault(robot_topic[0], {})[robot_topic[1]] = record
    robot_names = sorted(
        robot
        for robot, named in robot_topics.items()
        if topics.observation in named or set(topics.commands) & set(named)
    )
    diagnostics = diagnostics_stats(contents.diagnostics)

    robots: dict[str, dict[str, Any]] = {}
    all_latencies: list[float] = []
    all_stages: list[np.ndarray] = []
    for robot in robot_names:
        named = robot_topics[robot]
        observations = named.get(topics.observation)
        answered, command_counts = answered_commands(
            [named[name] for name in topics.commands if name in named],
            set(observations.stamp_ns) if observations is not None else None,
            latency_from_ns,
        )
        latencies = [(recv - stamp) / 1e6 for recv, stamp in answered]
        all_latencies += latencies
        if topics.stages and all(named.get(stage) and named[stage].stamp_ns for stage in topics.stages):
            all_stages.append(stage_latencies(answered, [named[stage] for stage in topics.stages]))
        robots[robot] = {"latency_ms": latency_stats(latencies), "commands": command_counts}
        robots[robot]["diagnostics"] = diagnostics.get(robot)
        truth = contents.truth.get(robot)
        if truth and robot in targets:
            held = [truth[s] for s in sorted(truth) if hold_from_ns is None or s >= hold_from_ns]
            if held:
                robots[robot]["tracking_error"] = tracking_stats(held, targets[robot])

    topic_summaries = {
        topic: topic_stats(record, _nominal_rate(topic, nominal_rates))
        for topic, record in sorted(contents.topics.items())
    }
    tracked = [r["tracking_error"] for r in robots.values() if "tracking_error" in r]
    failsafe = [d["failsafe_entries"] for d in diagnostics.values() if d["failsafe_entries"] is not None]
    overall = {
        "robots": len(robots),
        "latency_ms": latency_stats(all_latencies),
        "latency_stages_ms": stage_stats(all_stages, topics.stages),
        "drops": sum(t.get("drops", 0) for t in topic_summaries.values()),
        "stale_reports": sum(d["stale_reports"] for d in diagnostics.values()),
        "failsafe_entries": sum(failsafe) if failsafe else None,
        "tracking_error_mean_m": float(np.mean([t["mean_m"] for t in tracked])) if tracked else None,
        "tracking_error_max_m": max(t["max_m"] for t in tracked) if tracked else None,
        **separation_stats(contents.truth, collision_distance_m),
    }
    kinds: Counter[str] = Counter()
    for kind, hits in contents.perturbation_hits:
        kinds[kind or "unknown"] += hits
    return {
        "bag": str(bag_dir),
        "overall": overall,
        "robots": robots,
        "topics": topic_summaries,
        "perturbation_events": {
            "messages": contents.perturbation_messages,
            "count": len(contents.perturbation_hits),
            "hits": sum(kinds.values()),
            "by_kind": dict(kinds),
        },
    }


def write_summary(bag_dir: str | Path, out_path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Compute the metrics of ``bag_dir`` (keyword arguments of :func:`compute_metrics`) into ``out_path`` (JSON)."""
    summary = compute_metrics(bag_dir, **kwargs)
    Path(out_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
