"""The closed loop on the ROS 2 bench: sim bridge, perturbation node, policy node and recorder (real rclpy).

Every process and context runs on loopback only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in its own
domain. ``tests/data/hover4_bundle`` is a 4-drone hover policy (velocity commands) exported from a MAPPO run
of ``configs/hover4.yaml`` (1.2 M steps; it holds about 2.5 cm on PyBullet).
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from conftest import export_tiny_drone_bundle, may_go_realtime
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from s2r_bench.perturbation_node import ODOMETRY_LAYOUT, PerturbationNode
from s2r_bench.recorder_node import RecorderNode
from s2r_bench.sim_bridge_node import SimBridgeNode
from s2r_ros.qos import COMMAND, SENSOR
from std_msgs.msg import Empty, Float32MultiArray, String
from std_srvs.srv import SetBool
from typer.testing import CliRunner

from sim2real.bench.bridge import split_spec
from sim2real.bench.metrics import BenchTopics, compute_metrics
from sim2real.bench.run import ScenarioError, builtin_scenarios, load_scenario, run_bench
from sim2real.cli import app
from sim2real.deploy.cdr import Float32ArrayWriter, OdometryWriter, TwistStampedWriter, read_twist_stamped_cdr
from sim2real.deploy.codecs import fill_odometry, read_odometry
from sim2real.deploy.state import RobotState
from sim2real.export import verify_bundle
from sim2real.perturb.stream import StreamPerturber

BUNDLE = Path(__file__).parent / "data" / "hover4_bundle"
DOMAIN = 90 + os.getpid() % 5  # in-process contexts, up to DOMAIN + 4 (90-98): below the launcher's locked 100-200
# and above test_ros_policy.py's ids


@pytest.fixture(autouse=True)
def localhost_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def spin_until_subscribed(publishers: list, executors: list, timeout_s: float = 10.0) -> None:
    """Spin ``executors`` until every one of ``publishers`` has a subscriber, or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(p.get_subscription_count() for p in publishers):
        for executor in executors:
            executor.spin_once(timeout_sec=0.01)


def spin_for(executor: rclpy.executors.Executor, seconds: float, wait_s: float = 0.01) -> None:
    """Spin ``executor`` for ``seconds`` [s], each wait at most ``wait_s`` [s]."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=wait_s)


def shut_down(context: Context, executors: list[rclpy.executors.Executor], nodes: list[Node]) -> None:
    """Shut ``executors`` down, destroy ``nodes``, then shut ``context`` down."""
    for executor in executors:
        executor.shutdown()
    for node in nodes:
        node.destroy_node()
    rclpy.try_shutdown(context=context)


def test_scenarios_load_and_split_between_the_simulator_and_the_perturbation_node(tmp_path: Path) -> None:
    assert {"clean", "noise", "dropout", "delay", "malicious"} <= set(builtin_scenarios())
    assert load_scenario("clean").perturbations is None
    dynamics, messages = split_spec("dynamics.mass(scale=1.2)+obs.gaussian(std=0.1,fields=position)")
    assert [p["kind"] for p in dynamics["perturbations"]] == ["dynamics.mass"]
    assert [p["kind"] for p in messages["perturbations"]] == ["obs.gaussian"]
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("name: x\nperturbations: [{kind: obs.gaussian, sdt: 1}]\n", "sdt"),
        ("name: x\nmode: fast\n", "mode must be one of"),
        ("name: x\nwind: 3\n", "unknown keys"),
    ]:
        bad.write_text(text)
        with pytest.raises(ScenarioError, match=message):
            load_scenario(bad)
    with pytest.raises(ScenarioError, match="not a built-in scenario"):
        load_scenario("storm")


def test_perturbation_node_noise_and_dropout_statistics_match_the_spec() -> None:
    """1000 odometry messages through the node: position noise std 0.05 m, 20% of messages held (dropout).

    Then ``~/set_enabled`` switches the perturbations off (messages pass unchanged) and on again.
    """
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    spec = {
        "perturbations": [
            {"kind": "obs.gaussian", "std": 0.05, "fields": ["position"]},
            {"kind": "obs.dropout", "rate": 0.2, "fields": ["velocity"]},
        ]
    }
    node = PerturbationNode(
        context=context,
        parameter_overrides=[Parameter("robots", value=["cf1"]), Parameter("spec", value=json.dumps(spec))],
    )
    driver = Node("driver", context=context)
    received: list[Odometry] = []
    events: list[String] = []
    publisher = driver.create_publisher(Odometry, "/cf1/odom_raw", SENSOR)
    best_effort = QoSProfile(depth=2000, reliability=ReliabilityPolicy.BEST_EFFORT)
    driver.create_subscription(Odometry, "/cf1/odom", received.append, best_effort)
    driver.create_subscription(String, "/bench/perturbation_events", events.append, QoSProfile(depth=5000))
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(driver)

    def send(k: int) -> RobotState:
        """Publish sample ``k`` (x velocity 0.001 k m/s, a constant pose) and let both nodes handle it."""
        state = RobotState(
            np.array([1.0, 2.0, 1.0]), np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.001 * k, 0, 0]), np.zeros(3), k
        )
        msg = Odometry()
        fill_odometry(msg, state)
        publisher.publish(msg)
        for _ in range(3):
            executor.spin_once(timeout_sec=0.002)
        return state

    try:
        spin_until_subscribed([publisher], [executor])
        sent = [send(k) for k in range(1000)]
        deadline, seen, quiet_since = time.monotonic() + 10, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:  # until nothing more arrives
            executor.spin_once(timeout_sec=0.01)
            if len(received) + len(events) != seen:
                seen, quiet_since = len(received) + len(events), time.monotonic()
        statistics, switched = list(received), {}
        switch = driver.create_client(SetBool, "/perturbation_node/set_enabled")
        assert switch.wait_for_service(timeout_sec=10)
        for enabled in (False, True):
            future = switch.call_async(SetBool.Request(data=enabled))
            executor.spin_until_future_complete(future, timeout_sec=10)
            assert future.result().success and future.result().message == f"perturbations {'on' if enabled else 'off'}"
            received.clear()
            for k in range(20):
                send(k)
            executor.spin_once(timeout_sec=0.05)
            switched[enabled] = np.array([read_odometry(m).pos for m in received])
    finally:
        shut_down(context, [executor], [node, driver])
    assert len(statistics) >= 950  # best effort on loopback: hardly anything is lost
    out = [read_odometry(m) for m in statistics]
    stamps = np.array([s.stamp_ns for s in out])
    noise = np.array([s.pos for s in out]) - np.array([1.0, 2.0, 1.0])
    assert noise.std() == pytest.approx(0.05, rel=0.1) and abs(noise.mean()) < 0.01
    vel_in = np.array([sent[int(t)].vel[0] for t in stamps])
    held = np.abs(np.array([s.vel[0] for s in out]) - vel_in) > 1e-6  # the velocity kept an older value
    assert held.mean() == pytest.approx(0.2, abs=0.04)
    hits = {"obs.gaussian": 0, "obs.dropout": 0}
    for report in events:  # one JSON list of records per report period
        for record in json.loads(report.data):
            assert record["robot"] == "cf1" and record["stream"] == "state"
            hits[record["kind"]] += record["hits"]
    assert len(events) < 100  # reported every 0.1 s, not per message
    assert hits["obs.gaussian"] >= 950 and 150 < hits["obs.dropout"] < 250
    assert len(switched[False]) >= 15 and np.all(switched[False] == [1.0, 2.0, 1.0])  # off: passed unchanged
    assert len(switched[True]) >= 15 and np.all(switched[True] != [1.0, 2.0, 1.0])  # on again: noisy


def test_perturbation_node_forwards_the_robots_waiting_together_each_on_its_own_stream() -> None:
    """Odometry of 3 robots published at once (as a swarm driver does) goes out from one callback of the node, so
    the policy node behind gets the swarm together; each robot's values are those of its own
    ``StreamPerturber``, as when the messages come one at a time."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 4)
    robots = ["cf1", "cf2", "cf3"]
    spec = {"perturbations": [{"kind": "obs.gaussian", "std": 0.05, "fields": ["position", "velocity"]}]}
    node = PerturbationNode(
        context=context,
        parameter_overrides=[
            Parameter("robots", value=robots),
            Parameter("spec", value=json.dumps(spec)),
            Parameter("seed", value=3),
            Parameter("events_period_s", value=100.0),  # no report timer competes for the one callback below
            Parameter("warmup_lead_s", value=0.0),  # nor a warm-up timer (its own test follows)
        ],
    )
    streams = [StreamPerturber(spec, ODOMETRY_LAYOUT, agent=i, num_agents=3, seed=3) for i in range(3)]
    driver = Node("driver", context=context)
    publishers = [driver.create_publisher(Odometry, f"/{robot}/odom_raw", SENSOR) for robot in robots]
    received: dict[str, list[Odometry]] = {robot: [] for robot in robots}
    best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    for robot in robots:
        driver.create_subscription(Odometry, f"/{robot}/odom", received[robot].append, best_effort)
    node_executor = rclpy.executors.SingleThreadedExecutor(context=context)
    node_executor.add_node(node)
    driver_executor = rclpy.executors.SingleThreadedExecutor(context=context)
    driver_executor.add_node(driver)
    level = np.array([0.0, 0.0, 0.0, 1.0])
    delivered_per_callback, expected, got = [], [], []
    try:
        spin_until_subscribed([*publishers, *node.state_publishers], [driver_executor, node_executor])
        for k in range(10):
            states = [
                RobotState(np.array([i, 0.1 * k, 1.0]), level, np.array([0.0, 0.0, 0.01 * k]), np.zeros(3), k)
                for i in range(3)
            ]
            for publisher, state in zip(publishers, states, strict=True):
                msg = Odometry()
                fill_odometry(msg, state)
                publisher.publish(msg)
            time.sleep(0.05)  # all three are waiting in the node's subscriptions
            before = sum(map(len, received.values()))
            node_executor.spin_once(timeout_sec=1.0)  # one callback
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and sum(map(len, received.values())) < before + 3:
                driver_executor.spin_once(timeout_sec=0.01)
            delivered_per_callback.append(sum(map(len, received.values())) - before)
            for i, (robot, state) in enumerate(zip(robots, states, strict=True)):
                expected.append(streams[i].observe(state.row()))
                got.append(read_odometry(received[robot][-1]).row() if received[robot] else None)
    finally:
        shut_down(context, [node_executor, driver_executor], [node, driver])
    assert delivered_per_callback == [3] * 10
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have[:3], want[:3], atol=1e-6)  # position (float32 perturbation)
        np.testing.assert_allclose(have[7:10], want[7:10], atol=1e-6)  # world velocity
    clean = np.array([[i, 0.1 * k, 1.0] for k in range(10) for i in range(3)])
    assert np.all(np.array(got)[:, :3] != clean)  # the noise was applied to every robot's message


def test_perturbation_node_warms_up_between_bursts_on_a_second_perturber() -> None:
    """Bursts of 2 robots every 40 ms, the node spun all along: the warm-ups run between them, and each robot's
    values are still those of its own ``StreamPerturber`` with its hits counted once (the warm-ups go through a
    second perturber). When the bursts stop, the warm-ups stop. (A 15 ms lead: the warm-ups come while this
    test spins, not while it sleeps.)"""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 1)
    robots, bursts = ["cf1", "cf2"], 20
    spec = {"perturbations": [{"kind": "obs.gaussian", "std": 0.05, "fields": ["position"]}]}
    node = PerturbationNode(
        context=context,
        parameter_overrides=[
            Parameter("robots", value=robots),
            Parameter("spec", value=json.dumps(spec)),
            Parameter("seed", value=5),
            Parameter("warmup_lead_s", value=0.015),
            Parameter("warmup_realtime_only", value=False),  # this test's thread is not real-time
        ],
    )
    streams = [StreamPerturber(spec, ODOMETRY_LAYOUT, agent=i, num_agents=2, seed=5) for i in range(2)]
    driver = Node("driver", context=context)
    publishers = [driver.create_publisher(Odometry, f"/{robot}/odom_raw", SENSOR) for robot in robots]
    received: dict[str, list[Odometry]] = {robot: [] for robot in robots}
    for robot in robots:
        driver.create_subscription(Odometry, f"/{robot}/odom", received[robot].append, SENSOR)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(driver)
    level = np.array([0.0, 0.0, 0.0, 1.0])
    sent = []
    try:
        spin_until_subscribed([*publishers, *node.state_publishers], [executor])
        for k in range(bursts):
            states = [RobotState(np.array([i, 0.1 * k, 1.0]), level, np.zeros(3), np.zeros(3), k) for i in range(2)]
            for publisher, state in zip(publishers, states, strict=True):
                msg = Odometry()
                fill_odometry(msg, state)
                publisher.publish(msg)
            sent.append(states)
            time.sleep(0.01)  # both are waiting in the node's subscriptions: one burst
            spin_for(executor, 0.03, 0.002)
        fires = node.warmer.fires
        spin_for(executor, 0.3, 0.002)
        stopped = node.warmer.fires <= fires + 1 and node.warmer.timer.is_canceled()
        counts = [node.perturber.counts(agent)["0:obs.gaussian"]["events"] for agent in range(2)]
    finally:
        shut_down(context, [executor], [node, driver])
    assert fires >= bursts // 2 and stopped  # from the fifth burst on, once the period is known
    assert counts == [bursts, bursts]
    for i, robot in enumerate(robots):
        got = {read_odometry(m).stamp_ns: read_odometry(m).row() for m in received[robot]}
        assert sorted(got) == list(range(bursts))  # reliable here: every burst, once
        for k in range(bursts):
            np.testing.assert_allclose(got[k][:3], streams[i].observe(sent[k][i].row())[:3], atol=1e-6)


def test_perturbation_node_replaces_one_robots_commands_and_passes_unreadable_bytes_on() -> None:
    """Malicious cf2 (``agents.malicious`` rate 0.3, random) on the command hop of 2 robots: about 30% of cf2's
    commands are replaced by commands inside the bundle's command box, cf1's pass unchanged, stamps, frame ids
    and angular rates are kept, and ground truth counts the replacements. Bytes that are not the topic's message
    (big-endian commands, truncated odometry) pass on untouched and the node keeps working."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 1)
    spec = {"perturbations": [{"kind": "agents.malicious", "rate": 0.3, "mode": "random", "agents": [1]}]}
    node = PerturbationNode(
        context=context,
        parameter_overrides=[
            Parameter("robots", value=["cf1", "cf2"]),
            Parameter("spec", value=json.dumps(spec)),
            Parameter("command_in", value="cmd_vel_raw"),
            Parameter("bundle", value=str(BUNDLE)),
        ],
    )
    box = verify_bundle(BUNDLE)["contract"]["command"]
    low = np.subtract(box["offset"], box["scale"])
    high = np.add(box["offset"], box["scale"])
    driver = Node("driver", context=context)
    reliable = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
    command_in = [driver.create_publisher(TwistStamped, f"/{r}/cmd_vel_raw", reliable) for r in ("cf1", "cf2")]
    received: dict[str, list[bytes]] = {"cf1": [], "cf2": [], "odom": []}
    for robot in ("cf1", "cf2"):
        driver.create_subscription(TwistStamped, f"/{robot}/cmd_vel", received[robot].append, reliable, raw=True)
    odometry_in = driver.create_publisher(Odometry, "/cf1/odom_raw", SENSOR)
    best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    driver.create_subscription(Odometry, "/cf1/odom", received["odom"].append, best_effort, raw=True)
    events: list[String] = []
    driver.create_subscription(String, "/bench/perturbation_events", events.append, QoSProfile(depth=5000))
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(driver)
    velocity = np.array([0.1, -0.2, 0.05])
    writer = TwistStampedWriter("world")
    sent = 300
    unreadable = b"\x00\x00" + writer.encode(velocity, 7)[2:]  # big-endian encapsulation
    truncated = OdometryWriter("world", "cf1").encode(
        RobotState(np.ones(3), np.array([0.0, 0.0, 0.0, 1.0]), np.zeros(3), np.zeros(3), 7)
    )[:-16]

    def spin_until_quiet() -> None:
        deadline, seen, quiet_since = time.monotonic() + 10, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
            executor.spin_once(timeout_sec=0.01)
            count = sum(map(len, received.values())) + len(events)
            if count != seen:
                seen, quiet_since = count, time.monotonic()

    try:
        spin_until_subscribed(command_in, [executor])
        for k in range(sent):
            for publisher in command_in:
                msg = deserialize_message(writer.encode(velocity, 1000 + k), TwistStamped)
                msg.twist.angular.z = 0.5
                publisher.publish(msg)
            for _ in range(4):
                executor.spin_once(timeout_sec=0.002)
        spin_until_quiet()
        commands = {robot: [read_twist_stamped_cdr(data) for data in received[robot]] for robot in ("cf1", "cf2")}
        frames = {deserialize_message(data, TwistStamped).header.frame_id for data in received["cf2"]}
        received["cf1"].clear()
        command_in[0].publish(unreadable)
        odometry_in.publish(truncated)
        spin_until_quiet()
    finally:
        shut_down(context, [executor], [node, driver])
    for robot in ("cf1", "cf2"):
        stamps = np.array([stamp for _, _, stamp in commands[robot]])  # depth-1 queues keep the newest command
        assert len(stamps) >= 0.95 * sent and np.all(np.diff(stamps) > 0) and stamps[0] >= 1000 and stamps[-1] < 1300
        assert all(np.array_equal(angular, [0.0, 0.0, 0.5]) for _, angular, _ in commands[robot])
    assert all(np.array_equal(linear, velocity) for linear, _, _ in commands["cf1"]) and frames == {"world"}
    out = np.array([linear for linear, _, _ in commands["cf2"]])
    replaced = np.any(out != velocity, axis=1)
    assert replaced.mean() == pytest.approx(0.3, abs=0.08)
    assert np.all((out[replaced] >= low - 1e-9) & (out[replaced] <= high + 1e-9))
    assert len(np.unique(out[replaced][:, 0])) == replaced.sum()  # uniformly random, not one fixed command
    records = [record for report in events for record in json.loads(report.data)]
    assert {(r["robot"], r["stream"], r["kind"]) for r in records} == {("cf2", "command", "agents.malicious")}
    assert sum(r["hits"] for r in records) == replaced.sum()
    assert received["cf1"] == [unreadable] and received["odom"] == [truncated]


@pytest.mark.parametrize("action_type", ["vel", "rpm"])
def test_sim_bridge_rejects_unreadable_commands_and_flies_the_next_good_one(tmp_path: Path, action_type: str) -> None:
    """Velocity (``TwistStamped``) and motor (``Float32MultiArray``) commands are read from their bytes."""
    if action_type == "vel":
        bundle, topic, message_type = BUNDLE, "/cf1/cmd_vel", TwistStamped
        command = np.array([0.1, 0.0, 0.0])
        good = TwistStampedWriter("world").encode(command, 5)
    else:
        bundle = export_tiny_drone_bundle(tmp_path, num_drones=2, action_type="rpm")
        topic, message_type = "/cf1/cmd_rpm", Float32MultiArray
        command = np.array([14000.0, 14100.0, 14200.0, 14300.0])
        good = Float32ArrayWriter("m1,m2,m3,m4", 4).encode(command)
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 2)
    parameters = [Parameter("bundle", value=str(bundle)), Parameter("mode", value="lockstep")]
    bridge = SimBridgeNode(context=context, parameter_overrides=parameters)
    driver = Node("driver", context=context)
    publisher = driver.create_publisher(message_type, topic, COMMAND)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(driver)
    try:
        spin_until_subscribed([publisher], [executor])
        for data in (b"\x00\x00" + good[2:], good[:-8], good):  # big-endian, truncated, good
            publisher.publish(data)
            for _ in range(5):
                executor.spin_once(timeout_sec=0.01)
    finally:
        shut_down(context, [executor], [bridge, driver])
    assert bridge.sim.rejected_commands == 2
    box = verify_bundle(bundle)["contract"]["command"]
    expected = (command - box["offset"]) / np.asarray(box["scale"])
    np.testing.assert_allclose(bridge.sim.actions[0], expected, rtol=1e-6)


def test_sim_bridge_holds_until_the_recorder_subscribes_to_every_recorded_topic() -> None:
    """With ``recorded_topics`` the bridge holds the drones until ``recorder_node`` subscribes to each of them:
    a recording that joins late would miss the first messages (it failed the lock-step test in CI)."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 3)
    recorded = [f"/cf{i}/cmd_vel" for i in range(1, 5)] + ["/cf1/odom"]
    parameters = [Parameter("bundle", value=str(BUNDLE)), Parameter("recorded_topics", value=recorded)]
    bridge = SimBridgeNode(context=context, parameter_overrides=parameters)
    driver = Node("driver", context=context)
    for robot in bridge.robots:  # the policy's side: states and goals read, commands published
        driver.create_subscription(Odometry, f"/{robot}/odom", lambda _: None, SENSOR)
        driver.create_subscription(PoseStamped, f"/{robot}/goal", lambda _: None, COMMAND)
        driver.create_publisher(TwistStamped, f"/{robot}/cmd_vel", COMMAND)
    recorder = Node("recorder_subscriptions", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    for node in (bridge, driver, recorder):
        executor.add_node(node)

    def spin(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not bridge.flying and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.01)

    try:
        spin(2.0)  # everything but the recorder's subscriptions connects well within this
        held, waiting = bridge.flying, bridge._unconnected()
        for topic in recorded[:-1]:
            recorder.create_subscription(TwistStamped, topic, lambda _: None, COMMAND)
        spin(1.0)
        held_one_short, still_waiting = bridge.flying, bridge._unconnected()
        recorder.create_subscription(Odometry, recorded[-1], lambda _: None, SENSOR)
        spin(5.0)
    finally:
        shut_down(context, [executor], [bridge, driver, recorder])
    assert not held and waiting == [f"{topic} (by recorder_subscriptions)" for topic in recorded], waiting
    assert not held_one_short and still_waiting == ["/cf1/odom (by recorder_subscriptions)"], still_waiting
    assert bridge.flying


def test_real_time_bridge_publishes_clock_and_goals_before_the_physics_step() -> None:
    """In real time ``/clock`` (the latest states' simulated time) and the goals go out at the start of a period,
    before its physics step: nothing holds a core after the states. So, received in the same process, each clock
    is one period behind the simulation, whose step followed it."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 3)
    parameters = [Parameter("bundle", value=str(BUNDLE)), Parameter("hold_until_connected", value=False)]
    bridge = SimBridgeNode(context=context, parameter_overrides=parameters)
    driver = Node("driver", context=context)
    clocks, goals = [], {}  # (clock [s], the bridge's simulated time when it arrived [s]); robot -> [x, y, z]
    driver.create_subscription(
        Clock, "/clock", lambda m: clocks.append((m.clock.sec + m.clock.nanosec * 1e-9, bridge.sim.time_s)), SENSOR
    )
    for robot in bridge.robots:
        driver.create_subscription(PoseStamped, f"/{robot}/goal", partial(_store_goal, goals, robot), COMMAND)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(driver)
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (len(clocks) < 12 or len(goals) < len(bridge.robots)):
            executor.spin_once(timeout_sec=0.01)
    finally:
        shut_down(context, [executor], [bridge, driver])
    period = 1.0 / bridge.sim.ctrl_freq
    times, sim_times = np.array(clocks[2:]).T  # the first ones may have waited for discovery
    steps = np.round(np.diff(times) / period)  # one period each unless a best-effort clock was lost
    np.testing.assert_allclose(np.diff(times), steps * period, atol=1e-6)
    assert np.mean(steps == 1) >= 0.9
    np.testing.assert_allclose(sim_times - times, period, atol=1e-6)
    np.testing.assert_allclose([goals[robot] for robot in bridge.robots], bridge.sim.targets())


def _store_goal(goals: dict[str, list[float]], robot: str, msg: PoseStamped) -> None:
    goals[robot] = [msg.pose.position.x, msg.pose.position.y, msg.pose.position.z]


def test_recorder_takes_on_each_beat_and_on_its_timer_while_the_beat_is_silent(tmp_path: Path) -> None:
    """With ``beat_topic`` the recorder takes what has arrived when a beat comes, not in between; once the beat
    has been silent for ``discovery_period_s`` its timer takes."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN + 2)
    parameters = [
        Parameter("output_dir", value=str(tmp_path / "bag")),
        Parameter("topic_regex", value="^/(data|beat)$"),
        Parameter("beat_topic", value="/beat"),
        Parameter("discovery_period_s", value=1.0),
    ]
    driver = Node("driver", context=context)
    data = driver.create_publisher(String, "/data", COMMAND)
    beat = driver.create_publisher(Empty, "/beat", SENSOR)
    recorder = RecorderNode(context=context, parameter_overrides=parameters)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    executor.add_node(driver)
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and (recorder._beat is None or len(recorder._recording) < 2):
            executor.spin_once(timeout_sec=0.01)
        spin_until_subscribed([data, beat], [executor])
        beat.publish(Empty())
        spin_for(executor, 0.1)
        synced = recorder.message_count
        for i in range(5):
            data.publish(String(data=str(i)))
        spin_for(executor, 0.3)  # no beat: nothing taken (the timer waits for a second of silence)
        waiting = recorder.message_count
        beat.publish(Empty())
        spin_for(executor, 0.1)
        on_beat = recorder.message_count
        for i in range(3):
            data.publish(String(data=str(i)))
        spin_for(executor, 2.5)  # silent beat: the timer takes
        on_timer = recorder.message_count
    finally:
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        shut_down(context, [executor], [recorder, driver])  # the recorder ignores SIGINT and SIGTERM from its close
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert synced >= 1 and waiting == synced
    assert on_beat == synced + 5 + 1  # the data and the beat itself
    assert on_timer == on_beat + 3


def test_closed_loop_holds_four_drones_clean_and_reports_injected_noise(tmp_path: Path) -> None:
    """Clean: every drone within 10 cm of its target over the last 10 s. Noise: the events are reported."""
    clean = run_bench(
        BUNDLE, load_scenario("clean"), duration_s=14, hold_after_s=4, out_dir=tmp_path / "clean", progress=False
    )
    assert json.loads((tmp_path / "clean" / "summary.json").read_text())["overall"] == clean["overall"]
    logs = {name: (tmp_path / "clean" / "logs" / f"{name}.log").read_text()[-3000:] for name in clean["processes"]}
    for name, ended in clean["processes"].items():
        assert (ended["returncode"], ended["stopped_by"]) == (0, "SIGINT"), (name, ended, logs[name])
        assert ended["cpu_percent"] > 0, (name, ended)  # measured while it ran
    assert clean["overall"]["robots"] == 4
    for robot, metrics in clean["robots"].items():
        assert metrics["tracking_error"]["max_m"] < 0.10, (robot, metrics["tracking_error"])
        assert metrics["tracking_error"]["samples"] > 280  # 10 s of 30 Hz ground truth
        counters = metrics["diagnostics"]["counters"]  # safe commands only while starting (not failsafe entries)
        assert metrics["diagnostics"]["failsafe_entries"] == 0 and counters["safe_commands"] <= 30, counters
    assert clean["overall"]["collisions"] == 0 and clean["overall"]["stale_reports"] == 0
    assert clean["overall"]["latency_ms"]["count"] > 4 * 30 * 10
    start_ns, end_ns = clean["flight_window_ns"]  # the latency window: `bench metrics` on the bag reproduces it
    assert end_ns - start_ns >= 14e9
    again = compute_metrics(
        tmp_path / "clean" / "bag", latency_from_ns=start_ns, topics=BenchTopics(truth="odom", stages=("odom",))
    )
    assert again["overall"]["latency_ms"] == clean["overall"]["latency_ms"]
    stages = clean["overall"]["latency_stages_ms"]  # every answered command's odometry is in the bag
    assert list(stages) == ["stamp -> odom", "odom -> command"], stages
    assert all(stage["count"] == clean["overall"]["latency_ms"]["count"] for stage in stages.values()), stages
    assert clean["perturbation_events"]["count"] == 0 and not clean["injection"]["odometry"]
    host = clean["host"]  # the wake-up probe ran over the flight: about 200 wake-ups a second for 14 s
    assert (host["period_ms"], host["priority"]) == (5.0, 99 if may_go_realtime(99) else 0), host
    assert 0.8 * 14 * 200 < host["wakeup_lateness_ms"]["count"] < 1.05 * 14 * 200, host
    assert 0 <= host["wakeup_lateness_ms"]["p50_ms"] <= host["wakeup_lateness_ms"]["p99_ms"], host

    result = CliRunner().invoke(
        app,
        ["bench", "ros", "--bundle", str(BUNDLE), "--scenario", "noise", "--duration", "5", "--out",
         str(tmp_path / "noise"), "--realtime-priority", "10", "--warmup-lead-ms", "2", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0 and "perturbation hits" in result.output, result.output
    noisy = json.loads((tmp_path / "noise" / "summary.json").read_text())
    assert noisy["injection"]["odometry"]
    # every process ran on SCHED_FIFO 10 where this machine allows it, and stopped cleanly from there
    refused = [] if may_go_realtime(10) else sorted(set(noisy["processes"]) - {"wakeup_probe"})
    assert noisy["scheduling"] == {"realtime_priority": 10, "refused": refused}, noisy["scheduling"]
    assert "scheduling: SCHED_FIFO priority 10" in result.output and "host wake-up lateness p50" in result.output
    for node in ("perturbation_node", "policy_node"):  # the warm-up lead reached both nodes (their hits stay 2 each)
        params = yaml.safe_load((tmp_path / "noise" / "params" / f"{node}.yaml").read_text())
        assert params["/**"]["ros__parameters"]["warmup_lead_s"] == 0.002
    for name, ended in noisy["processes"].items():
        assert (ended["returncode"], ended["stopped_by"]) == (0, "SIGINT"), (name, ended)
    hits = noisy["perturbation_events"]["by_kind"]["obs.gaussian"]
    forwarded = sum(topic["count"] for name, topic in noisy["topics"].items() if name.endswith("/odom"))
    assert forwarded >= 4 * 30 * 4 and 0.9 * 2 * forwarded <= hits <= 1.05 * 2 * forwarded  # 2 noises a message
    assert noisy["overall"]["latency_ms"]["count"] > 0
    stages = noisy["overall"]["latency_stages_ms"]  # the hop is a stage of its own
    assert list(stages) == ["stamp -> odom_raw", "odom_raw -> odom", "odom -> command"], stages
    assert all(stage["count"] > 0 for stage in stages.values()) and "by stage p50 / p99: stamp -> odom_raw" in (
        result.output
    )
    with pytest.raises(FileExistsError, match="choose a new"):
        run_bench(BUNDLE, load_scenario("noise"), duration_s=5, out_dir=tmp_path / "noise", progress=False)
    with pytest.raises(ValueError, match="realtime_priority must be an integer from 0"):
        run_bench(BUNDLE, load_scenario("noise"), out_dir=tmp_path / "rt", realtime_priority=100, progress=False)
    with pytest.raises(ValueError, match=r"warmup_lead_s must be >= 0 s \(0: no warm-up\), got -0.001"):
        run_bench(BUNDLE, load_scenario("noise"), out_dir=tmp_path / "warm", warmup_lead_s=-0.001, progress=False)


def test_lock_step_bench_answers_every_state_and_holds_the_drones(tmp_path: Path) -> None:
    """Lock-step mode: the bridge steps once every robot answered the last state, so every state gets a command."""
    scenario = tmp_path / "lockstep.yaml"
    scenario.write_text("name: lockstep\ndescription: clean, stepped by the policy's answers\nmode: lockstep\n")
    summary = run_bench(
        BUNDLE, load_scenario(scenario), duration_s=6, hold_after_s=3, out_dir=tmp_path / "run", progress=False
    )
    assert "lockstep" in (tmp_path / "run" / "logs" / "sim_bridge.log").read_text()
    for name, ended in summary["processes"].items():
        assert (ended["returncode"], ended["stopped_by"]) == (0, "SIGINT"), (name, ended)
    steps = round(summary["simulated_s"] * 30)  # stamps are simulated time: 1/30 s per step
    assert steps > 30 and summary["overall"]["latency_ms"]["count"] == 0  # no wall-clock latency in lock step
    assert summary["overall"]["latency_stages_ms"] is None
    for robot, metrics in summary["robots"].items():
        recorded = {topic: summary["topics"][f"/{robot}/{topic}"] for topic in ("odom", "cmd_vel")}
        assert metrics["commands"]["answered"] >= 0.97 * steps, (robot, metrics["commands"], steps, recorded)
        assert metrics["tracking_error"]["max_m"] < 0.10, (robot, metrics["tracking_error"])
    assert summary["overall"]["failsafe_entries"] == 0 and summary["overall"]["collisions"] == 0
