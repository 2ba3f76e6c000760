"""The deployed policy: the ROS-free core (observations, failsafe, command guard) and the ROS 2 policy node.

ROS 2 tests use real rclpy on loopback only: every context gets its own domain id and discovery is limited to
localhost (``shared/research/ros2.md`` section 3).
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from conftest import may_go_realtime
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message, serialize_message
from s2r_ros.executor import SHUTDOWN_GRACE_S, make_executor, spin_until_shutdown
from s2r_ros.housekeeping import HousekeepingTimers, between_bursts_delay_ns
from s2r_ros.policy_node import PolicyNode
from s2r_ros.qos import COMMAND, SENSOR
from s2r_ros.warmup import BurstPeriod
from std_msgs.msg import Float32MultiArray, MultiArrayDimension

from sim2real.deploy import CommandSpec, ControlSchedule, Failsafe, RobotState, SwarmController, SwarmObserver
from sim2real.deploy.cdr import (
    SMALL_BURST,
    CdrError,
    Float32ArrayWriter,
    OdometryOffsets,
    OdometryWriter,
    SwarmOdometryWriter,
    TwistStampedWriter,
    odometry_offset,
    patch_odometry_cdr,
    patch_twist_stamped_cdr,
    read_float32_array_cdr,
    read_odometry_cdr,
    read_odometry_rows,
    read_twist_stamped_cdr,
    write_odometry_rows,
)
from sim2real.deploy.codecs import fill_odometry, read_odometry, stamp_to_ns
from sim2real.deploy.realtime import check_priority
from sim2real.deploy.state import SwarmState, agent_index
from sim2real.envs import make
from sim2real.envs.drones import CF2X
from sim2real.envs.drones.observation import drone_observation
from sim2real.export import OnnxPolicy, env_contract
from sim2real.export.bundle import NODE_PARAMS_FILE

REPO = Path(__file__).resolve().parents[1]
DOMAIN_BASE = 30 + os.getpid() % 50  # per pytest process; each test adds its own offset up to 7 (ids 30-86)
TARGETS = np.array([[0.5, 0.0, 1.0], [-0.5, 0.2, 1.2]])


@pytest.fixture(autouse=True)
def localhost_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DDS discovery beyond this machine, for this process and the nodes it starts."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


# ---------------------------------------------------------------------------------------------- helpers
def robot_state(seed: int, stamp_ns: int = 0) -> RobotState:
    """A random flying state: position, unit quaternion, world velocity, body rates."""
    rng = np.random.default_rng(seed)
    quat = rng.normal(size=4)
    return RobotState(
        pos=rng.uniform([-1, -1, 0.5], [1, 1, 1.5]),
        quat=quat / np.linalg.norm(quat),
        vel=rng.normal(scale=0.3, size=3),
        ang_vel_body=rng.normal(scale=0.5, size=3),
        stamp_ns=stamp_ns,
    )


def swarm_of(states: list[RobotState]) -> SwarmState:
    swarm = SwarmState(len(states))
    for agent, state in enumerate(states):
        swarm.update(agent, state)
    return swarm


def env_states(env) -> list[RobotState]:
    """The simulator's drones of env 0 as robot states."""
    s = env.sim
    return [RobotState(s.pos[0, i], s.quat[0, i], s.vel[0, i], s.ang_vel_body[0, i], 0) for i in range(env.num_agents)]


def hover_contract(**kwargs) -> dict:
    env = make("drone-hover", num_drones=2, **kwargs)
    contract = env_contract(env, "drone-hover")
    env.close()
    return contract


# ---------------------------------------------------------------------------------------------- core: observation
@pytest.mark.parametrize(("env_id", "action_type"), [("drone-hover", "vel"), ("drone-navigation", "rpm")])
def test_observer_reproduces_the_simulator_observations_exactly(env_id: str, action_type: str) -> None:
    env = make(env_id, num_drones=4, num_neighbors=2, action_type=action_type, seed=4)
    observer = SwarmObserver(env_contract(env, env_id))
    obs, _ = env.reset()
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, *_ = env.step(rng.uniform(-0.3, 0.3, env.action_space.shape).astype(np.float32))
    assert not np.any(env.steps == 0) and env.active.all()  # no reset in between: the same episode
    built = observer.observe(swarm_of(env_states(env)), env.task.targets[0], env.last_action[0])
    np.testing.assert_array_equal(built, obs[0])
    env.close()


def test_a_robot_not_seen_yet_is_placed_at_its_target_for_its_neighbours() -> None:
    contract = hover_contract()
    observer = SwarmObserver(contract)
    swarm = SwarmState(2)
    swarm.update(0, robot_state(1))
    obs = observer.observe(swarm, TARGETS, np.zeros((2, 3), np.float32))
    nbr = {f["name"]: slice(f["start"], f["start"] + f["size"]) for f in contract["obs_layout"]}["nbr_rel_pos"]
    np.testing.assert_allclose(obs[0, nbr], TARGETS[1] - swarm.pos[0], rtol=1e-6)
    no_target = TARGETS.copy()
    no_target[1] = np.nan
    assert not np.isfinite(observer.observe(swarm, no_target, np.zeros((2, 3), np.float32))[0]).all()


@pytest.mark.parametrize("twist_frame", ["body", "world"])
def test_odometry_codec_round_trips_and_puts_the_twist_in_the_stated_frame(twist_frame: str) -> None:
    state = robot_state(3, stamp_ns=1_700_000_000_123_456_789)
    msg = Odometry()
    fill_odometry(msg, state, twist_frame)
    assert stamp_to_ns(msg.header.stamp) == state.stamp_ns
    back = read_odometry(msg, twist_frame)
    for name in ("pos", "quat", "vel", "ang_vel_body"):
        np.testing.assert_allclose(getattr(back, name), getattr(state, name), atol=1e-12)
    # a drone yawed by +90 degrees flying along world x moves along its body -y
    yawed = RobotState(
        np.zeros(3), np.array([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)]), np.array([1.0, 0, 0]), np.zeros(3), 0
    )
    fill_odometry(msg, yawed, twist_frame)
    linear = msg.twist.twist.linear
    expected = [0.0, -1.0, 0.0] if twist_frame == "body" else [1.0, 0.0, 0.0]
    np.testing.assert_allclose([linear.x, linear.y, linear.z], expected, atol=1e-12)
    with pytest.raises(ValueError, match="twist_frame"):
        read_odometry(msg, "odom")


# frame ids of every length modulo 8: the doubles' alignment padding differs for each
FRAME_IDS = [("world", "cf1/base_link"), ("", ""), ("w", "ab"), ("abc", "x" * 4), ("map_frame", "cf12/base_link_x")]


@pytest.mark.parametrize(("frame_id", "child_frame_id"), FRAME_IDS)
@pytest.mark.parametrize("twist_frame", ["body", "world"])
def test_cdr_odometry_is_what_rclpy_serializes_and_reads_back(
    frame_id: str, child_frame_id: str, twist_frame: str
) -> None:
    state = robot_state(5, stamp_ns=1_700_000_000_987_654_321)
    msg = Odometry()
    msg.header.frame_id, msg.child_frame_id = frame_id, child_frame_id
    fill_odometry(msg, state, twist_frame)
    ours = OdometryWriter(frame_id, child_frame_id, twist_frame).encode(state)
    assert len(ours) == len(serialize_message(msg))  # byte for byte but the padding, which rclpy leaves unset
    back = deserialize_message(ours, Odometry)
    assert (back.header.frame_id, back.child_frame_id) == (frame_id, child_frame_id)
    assert list(back.pose.covariance) == [0.0] * 36
    msg.pose.covariance[7] = 0.25
    msg.twist.covariance[35] = 0.5
    for read in (read_odometry_cdr(serialize_message(msg), twist_frame), read_odometry(back, twist_frame)):
        for name in ("pos", "quat", "vel", "ang_vel_body"):
            np.testing.assert_allclose(getattr(read, name), getattr(state, name), atol=1e-12)
        assert read.stamp_ns == state.stamp_ns
    moved = RobotState(state.pos + 1.0, state.quat, -state.vel, state.ang_vel_body, state.stamp_ns + 5)
    patched = deserialize_message(patch_odometry_cdr(serialize_message(msg), moved, twist_frame), Odometry)
    assert patched.pose.covariance[7] == 0.25 and patched.twist.covariance[35] == 0.5
    assert (patched.header.frame_id, patched.child_frame_id) == (frame_id, child_frame_id)
    np.testing.assert_allclose(read_odometry(patched, twist_frame).vel, -state.vel, atol=1e-12)
    assert stamp_to_ns(patched.header.stamp) == state.stamp_ns + 5


@pytest.mark.parametrize("twist_frame", ["body", "world"])
def test_cdr_odometry_bursts_read_and_write_what_the_one_message_functions_do(twist_frame: str) -> None:
    states = [robot_state(seed, stamp_ns=1_000 + seed) for seed in range(4)]
    messages = []
    for (frame_id, child_frame_id), state in zip(FRAME_IDS, states, strict=False):  # other lengths, other offsets
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = frame_id, child_frame_id
        fill_odometry(msg, state, twist_frame)
        msg.pose.covariance[3] = 0.5
        messages.append(serialize_message(msg))
    offsets = [odometry_offset(m) for m in messages]
    rows = read_odometry_rows(messages, offsets, twist_frame)
    assert rows.shape == (4, 13)
    for row, message in zip(rows, messages, strict=True):
        np.testing.assert_array_equal(row, read_odometry_cdr(message, twist_frame).row())
    moved = rows + np.arange(13) * 0.01
    for message, written, row, state in zip(
        messages, write_odometry_rows(messages, offsets, moved, twist_frame), moved, states, strict=True
    ):
        one = RobotState(row[0:3], row[3:7], row[7:10], row[10:13], state.stamp_ns)
        assert written == patch_odometry_cdr(message, one, twist_frame)  # byte for byte
        assert deserialize_message(written, Odometry).pose.covariance[3] == 0.5
    with pytest.raises(CdrError, match="too short"):
        odometry_offset(messages[0][:-8])
    children = [child for _, child in FRAME_IDS[:4]]
    swarm = SwarmOdometryWriter("world", children, twist_frame).encode_rows(rows, 77)
    for child, row, encoded in zip(children, rows, swarm, strict=True):  # one pass = each robot's own writer
        one = RobotState(row[0:3], row[3:7], row[7:10], row[10:13], 77)
        assert encoded == OdometryWriter("world", child, twist_frame).encode(one)
        assert deserialize_message(encoded, Odometry).child_frame_id == child
        np.testing.assert_allclose(read_odometry(deserialize_message(encoded, Odometry), twist_frame).row(), row)
    with pytest.raises(ValueError, match=r"shape \(3, 13\) for 4 robots"):
        SwarmOdometryWriter("world", children).encode_rows(rows[:3], 0)


@pytest.mark.parametrize("twist_frame", ["body", "world"])
def test_cdr_small_bursts_in_python_floats_match_the_numpy_path_of_large_ones(twist_frame: str) -> None:
    count = SMALL_BURST + 3  # read and written with numpy; its first few alone with Python floats
    writer = SwarmOdometryWriter("world", [f"cf{i}/base_link" for i in range(count)], twist_frame)
    rows = np.stack([robot_state(seed).row() for seed in range(count)])
    rows[2, 7] = np.nan  # a NaN goes through both as a NaN
    messages = writer.encode_rows(rows, 5)
    offsets = [odometry_offset(m) for m in messages]
    large = read_odometry_rows(messages, offsets, twist_frame)
    small = read_odometry_rows(messages[:5], offsets[:5], twist_frame)
    np.testing.assert_allclose(np.delete(large, 2, axis=0), np.delete(rows, 2, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(small, large[:5], rtol=0, atol=1e-15, equal_nan=True)  # the same NaNs
    assert np.isnan(small[2, 7])
    moved = rows + 0.01
    moved[3, 3:7] *= 2.0  # no longer a unit quaternion: normalize=True writes it renormalised
    moved[4, 3:7] = 0.0  # a zero one is left as it is
    for normalize in (False, True):
        written = {
            "large": write_odometry_rows(messages, offsets, moved, twist_frame, normalize=normalize),
            "small": write_odometry_rows(messages[:5], offsets[:5], moved[:5], twist_frame, normalize=normalize),
        }
        back = {path: read_odometry_rows(out[:5], offsets[:5], twist_frame) for path, out in written.items()}
        np.testing.assert_allclose(back["small"], back["large"], rtol=0, atol=1e-12, equal_nan=True)
        quat_norm = np.linalg.norm(back["small"][3, 3:7])
        assert quat_norm == pytest.approx(1.0 if normalize else np.linalg.norm(moved[3, 3:7]))
        np.testing.assert_array_equal(back["small"][4, 3:7], 0.0)
        np.testing.assert_allclose(back["small"][:3, :3], moved[:3, :3], rtol=0, atol=1e-15)  # positions as given
    with pytest.raises(ValueError, match="twist_frame must be one of"):
        read_odometry_rows(messages[:2], offsets[:2], "child")
    with pytest.raises(ValueError, match=r"shape \(4, 13\) for 5 robots"):
        write_odometry_rows(messages[:5], offsets[:5], moved[:4])


def test_cdr_odometry_offsets_remembered_per_robot_are_those_parsed_and_bad_bytes_still_fail() -> None:
    offsets = OdometryOffsets()
    first = OdometryWriter("world", "cf1/base_link").encode(robot_state(1, stamp_ns=10))
    later = OdometryWriter("world", "cf1/base_link").encode(robot_state(2, stamp_ns=20))  # another stamp and state
    assert offsets(0, first) == offsets(0, later) == odometry_offset(first)
    for frame_id, child_frame_id in FRAME_IDS:  # other strings from the same robot: parsed again
        other = OdometryWriter(frame_id, child_frame_id).encode(robot_state(3))
        assert offsets(0, other) == odometry_offset(other)
    renamed = OdometryWriter("world", "cf2/base_link").encode(robot_state(4))  # same length, other bytes
    assert offsets(1, first) == offsets(1, renamed) == odometry_offset(renamed)
    with pytest.raises(CdrError, match="big-endian"):
        offsets(1, b"\x00\x00" + renamed[2:])
    with pytest.raises(CdrError, match="too short"):
        offsets(1, renamed[:-8])
    assert offsets(1, renamed) == odometry_offset(renamed)  # the good bytes after the bad


@pytest.mark.parametrize("frame_id", ["world", "", "abcd", "frame_7"])
def test_cdr_twist_stamped_matches_rclpy_and_bad_bytes_are_rejected_with_the_reason(frame_id: str) -> None:
    data = TwistStampedWriter(frame_id).encode(np.array([0.5, -1.0, 0.25]), 3_000_000_007)
    msg = deserialize_message(data, TwistStamped)
    assert msg.header.frame_id == frame_id and stamp_to_ns(msg.header.stamp) == 3_000_000_007
    assert [msg.twist.linear.x, msg.twist.linear.y, msg.twist.linear.z] == [0.5, -1.0, 0.25]
    msg.twist.angular.z = 2.0
    linear, angular, stamp = read_twist_stamped_cdr(serialize_message(msg))
    np.testing.assert_array_equal(linear, [0.5, -1.0, 0.25])
    np.testing.assert_array_equal(angular, [0.0, 0.0, 2.0])
    assert stamp == 3_000_000_007
    patched_bytes = patch_twist_stamped_cdr(serialize_message(msg), np.array([1.0, 2.0, 3.0]))
    patched = deserialize_message(patched_bytes, TwistStamped)
    assert [patched.twist.linear.x, patched.twist.linear.y, patched.twist.linear.z] == [1.0, 2.0, 3.0]
    assert patched.twist.angular.z == 2.0 and patched.header == msg.header
    with pytest.raises(CdrError, match="big-endian"):
        read_twist_stamped_cdr(b"\x00\x00" + data[2:])
    with pytest.raises(CdrError, match="too short"):
        read_twist_stamped_cdr(data[:-8])
    with pytest.raises(CdrError, match="NUL-terminated"):
        read_odometry_cdr(data[:12] + (10_000).to_bytes(4, "little") + data[16:])


# ---------------------------------------------------------------------------------------------- core: failsafe
def test_safe_command_is_zero_velocity_or_hover_rpm_and_actions_invert_commands() -> None:
    vel = CommandSpec.from_contract(hover_contract(max_speed=2.0))
    np.testing.assert_array_equal(vel.safe_command(), np.zeros(3))
    np.testing.assert_allclose(vel.to_action(np.array([1.0, -3.0, 0.5])), [0.5, -1.0, 0.25])
    rpm = CommandSpec.from_contract(hover_contract(action_type="rpm"))
    np.testing.assert_allclose(rpm.safe_command(), np.full(4, CF2X.hover_rpm))
    np.testing.assert_allclose(rpm.to_action(rpm.safe_command()), np.zeros(4), atol=1e-6)
    assert rpm.names == ("m1", "m2", "m3", "m4") and rpm.unit == "rpm"


def test_failsafe_faults_give_the_safe_command_count_entries_and_recover() -> None:
    safe = np.array([0.0, 0.0, 0.0])
    fs = Failsafe(2, safe, low=-np.ones(3), high=np.ones(3), stale_timeout_s=0.1)
    assert fs.input_fault(None, True, False) == "missing"
    assert fs.input_fault(0.15, True, False) == "stale"
    assert fs.input_fault(0.05, False, False) == "no_target"
    assert fs.input_fault(0.05, True, False) == "obs_not_finite"
    assert fs.input_fault(0.05, True, True) is None and fs.input_fault(0.05, True) is None
    # agents start in failsafe (missing, not counted) and leave it on the first good step
    out = fs.guard(0, None, np.array([0.5, -0.2, 0.1]))
    assert out.fault is None and out.previous_fault == "missing" and out.changed
    np.testing.assert_array_equal(out.command, [0.5, -0.2, 0.1])
    out = fs.guard(0, "stale")
    assert out.fault == "stale" and out.changed and np.array_equal(out.command, safe)
    assert not fs.guard(0, "stale").changed  # staying stale is one entry
    out = fs.guard(0, None, np.array([np.nan, 0.0, 0.0]))  # policy output NaN
    assert out.fault == "command_not_finite" and np.array_equal(out.command, safe)
    assert fs.guard(0, None, np.array([0.2, 0.2, 0.2])).fault is None
    fs.guard(0, "stale")
    counts = fs.counts(0)
    assert counts["entries_stale"] == 2 and counts["entries_command_not_finite"] == 1
    assert counts["entries_missing"] == 0 and counts["safe_commands"] == 4 and counts["commands"] == 6
    assert fs.counts(1)["commands"] == 0 and fs.fault[1] == "missing"
    # start-up faults (waiting for the first state and target) are not entries; once in control they are
    assert fs.guard(1, "no_target").starting and fs.counts(1)["entries_no_target"] == 0
    assert fs.guard(1, "stale").starting and fs.counts(1)["entries_stale"] == 1
    assert fs.guard(1, None, np.zeros(3)).fault is None and not fs.guard(1, "no_target").starting
    assert fs.counts(1)["entries_no_target"] == 1


def test_guard_clamps_to_the_bounds_and_rate_limits_but_never_delays_the_safe_command() -> None:
    fs = Failsafe(1, np.zeros(3), -np.ones(3), np.ones(3), stale_timeout_s=0.1, max_step=np.full(3, 0.25))
    steps = [fs.guard(0, None, np.array([3.0, -0.1, 0.0])) for _ in range(5)]
    np.testing.assert_allclose([s.command[0] for s in steps], [0.25, 0.5, 0.75, 1.0, 1.0])  # ramp, then clamp
    assert all(s.command[1] == -0.1 for s in steps) and all(s.limited for s in steps)
    assert not fs.guard(0, None, np.array([0.8, 0.0, 0.0])).limited
    np.testing.assert_array_equal(fs.guard(0, "obs_not_finite").command, np.zeros(3))
    np.testing.assert_allclose(fs.guard(0, None, np.array([0.8, 0.0, 0.0])).command, [0.25, 0.0, 0.0])


def test_guard_of_several_robots_at_once_is_the_guard_of_each_in_turn() -> None:
    def failsafe() -> Failsafe:
        return Failsafe(4, np.zeros(3), -np.ones(3), np.ones(3), stale_timeout_s=0.1, max_step=np.full(3, 0.25))

    rng = np.random.default_rng(0)
    batch, single = failsafe(), failsafe()
    agents = [2, 0, 3, 1]
    for step in range(6):  # starting, flying, a NaN command, input faults, recovering
        commands = rng.normal(0.0, 1.0, (4, 3))
        commands[1, step % 3] = np.nan if step == 2 else commands[1, step % 3]
        faults = [None, None, "stale" if step in (3, 4) else None, "no_target" if step == 0 else None]
        together = batch.guard_many(agents, faults, commands)
        one_by_one = [single.guard(a, f, c) for a, f, c in zip(agents, faults, commands, strict=True)]
        for b, o in zip(together, one_by_one, strict=True):
            np.testing.assert_array_equal(b.command, o.command)
            assert (b.fault, b.previous_fault, b.limited, b.starting) == (
                o.fault,
                o.previous_fault,
                o.limited,
                o.starting,
            )
    assert [batch.counts(a) for a in range(4)] == [single.counts(a) for a in range(4)]
    assert batch.counts(0)["entries_command_not_finite"] == 1 and batch.counts(3)["entries_stale"] == 1
    assert batch.guard_many([1], [None])[0].fault == "command_not_finite"  # no command at all
    with pytest.raises(ValueError, match="outside the command bounds"):
        Failsafe(1, np.full(3, 2.0), -np.ones(3), np.ones(3), stale_timeout_s=0.1)


def test_schedule_steps_at_the_control_rate_whatever_the_state_rate() -> None:
    period = round(1e9 / 30)
    on_rate = ControlSchedule(1, 30.0)
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, 90) * period
    assert all(on_rate.due(0, int(i * period + j)) for i, j in enumerate(jitter))
    fast = ControlSchedule(1, 30.0)
    runs = sum(fast.due(0, i * 10_000_000) for i in range(300))  # 100 Hz for 3 s
    assert 88 <= runs <= 92
    slow = ControlSchedule(1, 30.0)
    assert all(slow.due(0, i * 50_000_000) for i in range(20))  # 20 Hz: every state runs
    assert not slow.due(0, 19 * 50_000_000)  # a repeated stamp does not run twice
    assert slow.due(0, 1_000)  # a clock that went backwards starts over


def test_controller_flies_with_the_policy_and_the_watchdog_holds_silent_robots(vel_bundle: Path) -> None:
    policy = OnnxPolicy(vel_bundle)
    controller = SwarmController(policy, targets=TARGETS, stale_timeout_s=0.1)
    now = 5_000_000_000
    states = [robot_state(10, now), robot_state(11, now)]
    assert [c.agent for c in controller.watchdog(now)] == [0, 1]  # nobody reported yet
    first = controller.on_state(0, states[0], now + 1_000)
    assert first.stamp_ns == now and first.guarded.fault is None
    placeholder = SwarmState(2)
    placeholder.update(0, states[0])
    obs = controller.observer.observe(placeholder, TARGETS, np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(first.guarded.command, policy.command(obs[:1], agent_ids=[0])[0], atol=1e-6)
    np.testing.assert_allclose(controller.last_action[0], first.guarded.command, atol=1e-6)  # unit scale
    assert [c.agent for c in controller.watchdog(now + 1_000)] == [1]
    status = controller.status(1, now)
    assert status.level == "STALE" and status.values["fault"] == "missing" and status.values["obs_age_ms"] == "never"
    later = now + 200_000_000
    assert [c.agent for c in controller.watchdog(later)] == [0, 1]
    assert controller.status(0, later).values["entries_stale"] == "1"


class CountedPolicy:
    """An ``OnnxPolicy`` that records the batch size of every ``command`` call."""

    def __init__(self, policy: OnnxPolicy) -> None:
        self.policy, self.contract, self.batches = policy, policy.contract, []

    def command(self, obs: np.ndarray, agent_ids: list[int]) -> np.ndarray:
        self.batches.append(len(agent_ids))
        return self.policy.command(obs, agent_ids=agent_ids)


def test_controller_steps_a_burst_of_states_in_one_inference_as_one_by_one(vel_bundle: Path) -> None:
    """``on_states`` gives each robot the command ``on_state`` gives once every state of the burst is in, from
    one policy call; a robot with a NaN state fails safe without holding the others back."""
    now = 5_000_000_000
    states = {0: robot_state(30, now), 1: robot_state(31, now)}
    batched_policy = CountedPolicy(OnnxPolicy(vel_bundle))
    batched = SwarmController(batched_policy, targets=TARGETS, stale_timeout_s=0.1).on_states(states, now + 1_000)
    one_by_one = SwarmController(OnnxPolicy(vel_bundle), targets=TARGETS, stale_timeout_s=0.1)
    for agent, state in states.items():
        one_by_one.state.update(agent, state)
    singles = [one_by_one.on_state(agent, state, now + 1_000) for agent, state in states.items()]
    assert batched_policy.batches == [2] and [c.agent for c in batched] == [0, 1]
    for got, single in zip(batched, singles, strict=True):
        assert got.stamp_ns == now and got.guarded.fault is None
        np.testing.assert_allclose(got.guarded.command, single.guarded.command, atol=1e-6)

    period = round(1e9 / 30)
    broken = robot_state(32, now + period)
    broken.ang_vel_body[:] = np.nan  # its own field: the neighbours do not observe it
    batched = SwarmController(batched_policy, targets=TARGETS, stale_timeout_s=0.1)
    batched_policy.batches.clear()
    out = batched.on_states({1: broken, 0: robot_state(33, now + period)}, now + period)
    assert [c.agent for c in out] == [1, 0] and batched_policy.batches == [1]
    assert out[0].guarded.fault == "obs_not_finite" and out[1].guarded.fault is None
    assert batched.on_states({0: robot_state(34, now + period)}, now + period) == []  # not due again yet


def test_agent_index_is_a_view_for_the_whole_swarm_in_order_and_the_list_otherwise() -> None:
    assert agent_index([0, 1, 2], 3) == slice(None)
    assert agent_index(range(2), 2) == slice(None)
    assert agent_index([1, 0], 2) == [1, 0]  # another order: the rows in that order
    assert agent_index([0, 1], 3) == [0, 1]
    assert agent_index([], 0) == slice(None) and agent_index([], 2) == []


def test_controller_state_rows_step_a_burst_like_states_and_a_robot_given_twice_counts_its_last(
    vel_bundle: Path,
) -> None:
    now = 5_000_000_000
    old, new, other = robot_state(40, now - 1_000), robot_state(41, now), robot_state(42, now)
    rows = np.stack([old.row(), other.row(), new.row()])
    counted = CountedPolicy(OnnxPolicy(vel_bundle))
    from_rows = SwarmController(counted, targets=TARGETS).on_state_rows([1, 0, 1], rows, [old.stamp_ns, now, now], now)
    from_states = SwarmController(OnnxPolicy(vel_bundle), targets=TARGETS).on_states({1: new, 0: other}, now)
    assert counted.batches == [2] and [c.agent for c in from_rows] == [1, 0]
    for got, expected in zip(from_rows, from_states, strict=True):
        assert got.stamp_ns == expected.stamp_ns == now
        np.testing.assert_array_equal(got.guarded.command, expected.guarded.command)


@pytest.mark.parametrize("label", ["m1,m2,m3,m4", "", "ab"])
def test_rpm_commands_are_a_labelled_float32_array_as_rclpy_serializes_it(label: str) -> None:
    rpm = np.array([14000.5, 14001.0, 13999.0, 14468.0])
    data = Float32ArrayWriter(label, 4).encode(rpm)
    msg = Float32MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=label, size=4, stride=4)]
    msg.data = rpm.astype(np.float32)
    assert data == serialize_message(msg)  # byte for byte
    (dim,) = deserialize_message(data, Float32MultiArray).layout.dim
    assert (dim.label, dim.size, dim.stride) == (label, 4, 4)
    msg.layout.dim.append(MultiArrayDimension(label="extra", size=1, stride=1))  # any layout reads back
    np.testing.assert_array_equal(read_float32_array_cdr(serialize_message(msg)), rpm)
    with pytest.raises(CdrError, match="too short for 4 floats"):
        read_float32_array_cdr(data[:-4])
    with pytest.raises(CdrError, match="not little-endian"):
        read_float32_array_cdr(b"\x00\x00" + data[2:])
    with pytest.raises(ValueError, match="3 values for a 4-value array"):
        Float32ArrayWriter(label, 4).encode(rpm[:3])


# ---------------------------------------------------------------------------------------------- ROS 2 node
class Harness:
    """The policy node and a test node in one context and domain, spun by hand."""

    def __init__(self, domain: int, bundle: Path, **params) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain)
        overrides = [Parameter("bundle", value=str(bundle)), *(Parameter(k, value=v) for k, v in params.items())]
        self.policy_node = PolicyNode(context=self.context, parameter_overrides=overrides)
        self.node = Node("test_driver", context=self.context)
        self.executor = make_executor(self.context)
        self.executor.add_node(self.policy_node)
        self.executor.add_node(self.node)
        self.commands: dict[str, list[TwistStamped]] = {"cf1": [], "cf2": []}
        self.diagnostics: list[DiagnosticArray] = []
        self.odom_publishers = {}
        for robot, received in self.commands.items():
            self.odom_publishers[robot] = self.node.create_publisher(Odometry, f"/{robot}/odom", SENSOR)
            self.node.create_subscription(TwistStamped, f"/{robot}/cmd_vel", received.append, QoSProfile(depth=500))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, QoSProfile(depth=100))
        assert self.spin_until(lambda: all(p.get_subscription_count() for p in self.odom_publishers.values()), 10.0)

    def close(self) -> None:
        self.executor.shutdown()
        self.policy_node.destroy_node()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def spin_until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
            if done():
                return True
        return False

    def odometry(self, robot: str, state: RobotState) -> Odometry:
        msg = Odometry()
        msg.header.frame_id, msg.child_frame_id = "world", robot
        fill_odometry(msg, state)
        return msg

    def exchange(self, robot: str, state: RobotState, timeout_s: float = 10.0) -> TwistStamped:
        """Publish ``state`` (again every 50 ms: odometry is best effort) until the command it produced arrives."""
        msg = self.odometry(robot, state)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.odom_publishers[robot].publish(msg)
            if self.spin_until(lambda: self.reply(robot, state.stamp_ns) is not None, 0.05):
                return self.reply(robot, state.stamp_ns)
        raise AssertionError(f"no command on /{robot}/cmd_vel for the odometry stamped {state.stamp_ns}")

    def reply(self, robot: str, stamp_ns: int) -> TwistStamped | None:
        return next((c for c in self.commands[robot] if stamp_to_ns(c.header.stamp) == stamp_ns), None)

    def status(self, robot: str, since: int) -> list[DiagnosticStatus]:
        """Diagnostics about ``robot`` published after the first ``since`` arrays."""
        return [s for array in self.diagnostics[since:] for s in array.status if s.hardware_id == robot]


def linear(msg: TwistStamped) -> np.ndarray:
    v = msg.twist.linear
    return np.array([v.x, v.y, v.z])


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def harness_factory() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(offset: int, bundle: Path, **params) -> Harness:
        made.append(Harness(DOMAIN_BASE + offset, bundle, **params))
        return made[-1]

    yield build
    for harness in made:
        harness.close()


def test_policy_node_publishes_the_command_onnx_policy_computes(vel_bundle: Path, harness_factory) -> None:
    h = harness_factory(0, vel_bundle, targets=TARGETS.ravel().tolist(), stale_timeout_s=5.0)
    policy = OnnxPolicy(vel_bundle)
    fields = {f["name"]: slice(f["start"], f["start"] + f["size"]) for f in policy.contract["obs_layout"]}
    period = round(1e9 / policy.contract["ctrl_freq_hz"])
    t0 = h.now_ns()
    cf1, cf2 = robot_state(20, t0), robot_state(21, t0 + period)
    h.exchange("cf1", cf1)  # cf2 not seen yet: placed at its target
    got = h.exchange("cf2", cf2)

    def expected(agent: int, states: list[RobotState], last_action: np.ndarray, targets=TARGETS) -> np.ndarray:
        stack = {k: np.stack([getattr(s, k) for s in states])[None] for k in ("pos", "quat", "vel", "ang_vel_body")}
        obs = drone_observation(
            stack["pos"],
            stack["quat"],
            stack["vel"],
            stack["ang_vel_body"],
            targets[None],
            np.zeros((1, 2, 3)),
            last_action[None],
            1,
            fields,
        )
        return policy.command(obs[0, agent : agent + 1], agent_ids=[agent])[0]

    np.testing.assert_allclose(linear(got), expected(1, [cf1, cf2], np.zeros((2, 3))), atol=1e-5)
    assert got.header.frame_id == "world"
    # the next step observes the command the robot received as its last action (unit command scale)
    first_cf1 = linear(h.reply("cf1", t0))
    cf1_next = robot_state(22, t0 + 2 * period)
    got = h.exchange("cf1", cf1_next)
    last = np.stack([first_cf1, linear(h.reply("cf2", t0 + period))])
    np.testing.assert_allclose(linear(got), expected(0, [cf1_next, cf2], last), atol=1e-5)
    assert not np.allclose(linear(got), 0.0)

    # a goal on /cf2/goal replaces cf2's target
    goal = PoseStamped()
    goal.header.frame_id = "world"
    goal.pose.position.x, goal.pose.position.y, goal.pose.position.z = 1.5, -1.0, 0.8
    goals = h.node.create_publisher(PoseStamped, "/cf2/goal", COMMAND)
    assert h.spin_until(lambda: goals.get_subscription_count() > 0, 10.0)
    goals.publish(goal)
    assert h.spin_until(lambda: h.policy_node.controller.targets[1].tolist() == [1.5, -1.0, 0.8], 10.0)
    cf2_next = robot_state(23, t0 + 2 * period)
    got = h.exchange("cf2", cf2_next)
    last = np.stack([linear(h.reply("cf1", t0 + 2 * period)), linear(h.reply("cf2", t0 + period))])
    new_targets = np.array([TARGETS[0], [1.5, -1.0, 0.8]])
    np.testing.assert_allclose(linear(got), expected(1, [cf1_next, cf2_next], last, new_targets), atol=1e-5)


def test_policy_node_steps_odometry_that_arrived_together_in_one_inference(vel_bundle: Path, harness_factory) -> None:
    """Both robots' odometry waiting at once: the first callback takes the other's too, one policy call
    answers both, each command carries its own odometry's stamp."""
    h = harness_factory(3, vel_bundle, targets=TARGETS.ravel().tolist(), stale_timeout_s=5.0)
    policy = CountedPolicy(h.policy_node.controller.policy)
    h.policy_node.controller.policy = policy
    t0 = h.now_ns()
    states = {"cf1": robot_state(40, t0), "cf2": robot_state(41, t0 + 1)}
    for robot, state in states.items():
        h.odom_publishers[robot].publish(h.odometry(robot, state))
    time.sleep(0.2)  # both samples are in the node's readers before it spins
    assert h.spin_until(lambda: all(h.reply(r, s.stamp_ns) for r, s in states.items()), 10.0)
    assert policy.batches == [2]
    expected = SwarmController(OnnxPolicy(vel_bundle), targets=TARGETS).on_states(
        {0: states["cf1"], 1: states["cf2"]}, t0 + 2
    )
    for robot, command in zip(states, expected, strict=True):
        np.testing.assert_allclose(linear(h.reply(robot, states[robot].stamp_ns)), command.guarded.command, atol=1e-5)


def test_burst_period_is_the_median_interval_between_burst_starts() -> None:
    """Arrivals within 1 ms of the one before are the same burst; a missed burst (one interval of two periods)
    does not move the period; too few intervals give none."""
    period = BurstPeriod()
    t, ms = 0, 1_000_000
    assert period.arrived(t) and period.period_ns is None
    for k in range(1, 10):
        t += 20 * ms if k == 5 else 10 * ms  # burst 5 came a period late (one missed)
        assert period.arrived(t)
        assert not period.arrived(t + ms // 2)  # the same burst, split by the scheduler
        if k == 3:
            assert period.period_ns is None  # three intervals: not enough yet
    assert period.period_ns == 10 * ms
    assert period.arrived(t + ms)  # exactly 1 ms later: a new burst


def test_housekeeping_timers_fire_in_the_middle_of_the_burst_intervals() -> None:
    """Once the bursts' period is known, a housekeeping timer is re-armed for the middle of the burst interval
    nearest its own period ahead; a plain period before that, for a period shorter than the bursts', and once the
    bursts have paused for longer than its period."""
    bursts, ms = BurstPeriod(), 1_000_000
    assert between_bursts_delay_ns(bursts, 100 * ms, 0) == 100 * ms  # no burst yet
    for k in range(6):
        bursts.arrived(k * 10 * ms + (ms // 5 if k == 3 else 0))  # every 10 ms, one 0.2 ms late
    assert bursts.period_ns == 10 * ms and bursts.last_ns == 50 * ms
    now = 51 * ms
    assert now + between_bursts_delay_ns(bursts, 10 * ms, now) == 65 * ms  # mid-way after the next burst
    assert now + between_bursts_delay_ns(bursts, 100 * ms, now) == 155 * ms  # ten intervals on
    assert between_bursts_delay_ns(bursts, 5 * ms, now) == 5 * ms  # faster than the bursts: plain
    assert between_bursts_delay_ns(bursts, 10 * ms, 71 * ms) == 10 * ms  # paused over a period: plain


def test_housekeeping_timer_moves_between_the_bursts_on_the_events_executor() -> None:
    """On the nodes' executor, a housekeeping timer started together with 20 ms bursts moves to fire half an
    interval after them: re-arming it from its own callback takes effect."""
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_BASE + 4)
    node = rclpy.create_node("housekeeping", context=context)
    housekeeping = HousekeepingTimers(node)
    bursts, fired = [], []
    steady = Clock(clock_type=ClockType.STEADY_TIME)
    node.create_timer(0.02, lambda: (bursts.append(time.monotonic_ns()), housekeeping.arrived()), clock=steady)
    housekeeping.create_timer(0.02, lambda: fired.append(time.monotonic_ns()))
    executor = make_executor(context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    late = [t for t in fired if t > fired[0] + 0.7e9]  # after the bursts' period was learnt
    phase_ms = [(t - max(b for b in bursts if b <= t)) / 1e6 for t in late]
    assert len(late) >= 20 and np.mean([6 <= p <= 14 for p in phase_ms]) >= 0.8, phase_ms


def test_policy_node_warms_up_between_bursts_and_changes_no_command(vel_bundle: Path, harness_factory) -> None:
    """Odometry bursts every 40 ms: the warm-up runs between them on a copy of the last burst, every command
    equals the one a controller without warm-ups computes, no command is added, and the warm-ups stop when
    the bursts stop; by default they run only on a real-time thread, which this test's is not. (The lead is 15 ms:
    the warm-ups come while this test spins, not while it sleeps.)"""
    h = harness_factory(
        6,
        vel_bundle,
        targets=TARGETS.ravel().tolist(),
        stale_timeout_s=5.0,
        warmup_lead_s=0.015,
        warmup_realtime_only=False,
    )
    warmer = h.policy_node.warmer
    assert warmer is not None and warmer.fires == 0
    reference = SwarmController(OnnxPolicy(vel_bundle), targets=TARGETS, stale_timeout_s=5.0)
    period_ns, bursts = 40_000_000, 25

    def fly(k: int) -> None:
        """Burst ``k``: both robots' odometry, checked against the reference controller, then a period."""
        stamp = t0 + k * period_ns
        states = {robot: robot_state(200 + 2 * k + i, stamp) for i, robot in enumerate(("cf1", "cf2"))}
        for robot, state in states.items():
            h.odom_publishers[robot].publish(h.odometry(robot, state))
        time.sleep(0.01)  # both samples are in the node's readers: one burst
        assert h.spin_until(lambda: all(h.reply(r, stamp) for r in ("cf1", "cf2")), 5.0)
        expected = reference.on_states(dict(enumerate(states.values())), stamp)
        for robot, command in zip(states, expected, strict=True):
            np.testing.assert_allclose(linear(h.reply(robot, stamp)), command.guarded.command, atol=1e-9)
        h.spin_until(lambda: h.now_ns() >= stamp + period_ns, 1.0)

    t0 = h.now_ns()
    for k in range(bursts):
        fly(k)
    assert warmer.fires >= bursts // 2  # from the fifth burst on, once the period is known
    stamps = {t0 + k * period_ns for k in range(bursts)}
    for robot in ("cf1", "cf2"):
        answered = [stamp_to_ns(c.header.stamp) for c in h.commands[robot]]
        assert sorted(t for t in answered if t in stamps) == sorted(stamps)  # each burst answered once
    fires = warmer.fires
    h.spin_until(lambda: False, 0.3)
    assert warmer.fires <= fires + 1 and warmer.timer.is_canceled()
    warmer.realtime_only, fires = True, warmer.fires  # the default, on this normal-priority thread
    t0 = h.now_ns()
    for k in range(8):
        fly(k)
    assert warmer.fires == fires


def test_policy_node_fails_safe_on_silence_and_nan_and_recovers(vel_bundle: Path, harness_factory) -> None:
    timeout_s, period_s = 0.5, 1.0 / 30
    h = harness_factory(
        1, vel_bundle, targets=TARGETS.ravel().tolist(), stale_timeout_s=timeout_s, diagnostics_period_s=0.05
    )
    seed = iter(range(100, 10_000))

    def fly(robot: str) -> TwistStamped:
        """One fresh odometry sample (after a control period) and the command it produced."""
        h.spin_until(lambda: False, period_s)
        return h.exchange(robot, robot_state(next(seed), h.now_ns()))

    def latest_status(robot: str, since: int, level: bytes) -> DiagnosticStatus:
        found = h.spin_until(lambda: any(s.level == level for s in h.status(robot, since)), 5.0)
        assert found, f"no {level!r} diagnostics for {robot}: {[s.level for s in h.status(robot, since)]}"
        return next(s for s in h.status(robot, since) if s.level == level)

    for _ in range(3):
        flying = fly("cf1")
        fly("cf2")
    assert not np.allclose(linear(flying), 0.0)
    ok = latest_status("cf1", len(h.diagnostics), DiagnosticStatus.OK)
    assert values(ok)["fault"] == "none" and ok.name.endswith("cf1")

    # silence on cf1 (cf2 keeps flying): the watchdog sends zero velocity within one timeout
    last_stamp = stamp_to_ns(flying.header.stamp)
    n = len(h.commands["cf1"])

    def safe_sent() -> bool:
        return any(np.array_equal(linear(c), np.zeros(3)) for c in h.commands["cf1"][n:])

    while not safe_sent() and h.now_ns() - last_stamp < 3e9:
        fly("cf2")
    safe = next(c for c in h.commands["cf1"][n:] if np.array_equal(linear(c), np.zeros(3)))
    assert timeout_s < (stamp_to_ns(safe.header.stamp) - last_stamp) * 1e-9 < timeout_s + 3 * period_s + 0.2
    stale = latest_status("cf1", len(h.diagnostics), DiagnosticStatus.STALE)
    assert values(stale)["fault"] == "stale" and int(values(stale)["entries_stale"]) >= 1
    assert float(values(stale)["obs_age_ms"]) > timeout_s * 1e3

    # good odometry again: the policy is back in control
    assert not np.allclose(linear(fly("cf1")), 0.0)
    assert values(latest_status("cf1", len(h.diagnostics), DiagnosticStatus.OK))["fault"] == "none"

    # a NaN position: the safe command answers that very sample, then recovery on the next good one
    h.spin_until(lambda: False, period_s)
    bad = robot_state(7, h.now_ns())
    bad = RobotState(np.array([np.nan, 0.0, 1.0]), bad.quat, bad.vel, bad.ang_vel_body, bad.stamp_ns)
    np.testing.assert_array_equal(linear(h.exchange("cf1", bad)), np.zeros(3))
    error = latest_status("cf1", len(h.diagnostics), DiagnosticStatus.ERROR)
    assert values(error)["fault"] == "obs_not_finite" and values(error)["entries_obs_not_finite"] == "1"
    assert not np.allclose(linear(fly("cf1")), 0.0)
    recovered = values(latest_status("cf1", len(h.diagnostics), DiagnosticStatus.OK))
    assert int(recovered["entries_stale"]) >= 1 and recovered["entries_obs_not_finite"] == "1"
    assert int(recovered["safe_commands"]) >= 2

    # odometry the node cannot read (big-endian CDR) counts as none: it keeps running and fails safe when stale
    odometry = serialize_message(h.odometry("cf1", robot_state(8, h.now_ns())))
    last_stamp, n = h.now_ns(), len(h.commands["cf1"])
    while not safe_sent() and h.now_ns() - last_stamp < 3e9:
        h.odom_publishers["cf1"].publish(b"\x00\x00" + odometry[2:])
        fly("cf2")
    assert safe_sent()
    assert not np.allclose(linear(fly("cf1")), 0.0)


def test_policy_node_flies_an_rpm_policy_with_labelled_motor_commands_and_hovers_on_silence(
    tmp_path: Path, harness_factory
) -> None:
    """Motor policies over DDS: ``cmd_rpm`` equals ``OnnxPolicy``'s command; a silent robot gets hover RPM."""
    from conftest import export_tiny_drone_bundle

    bundle = export_tiny_drone_bundle(tmp_path, num_drones=2, action_type="rpm")
    h = harness_factory(2, bundle, targets=TARGETS.ravel().tolist(), stale_timeout_s=1.0)
    rpm: dict[str, list[Float32MultiArray]] = {"cf1": [], "cf2": []}
    for robot, received in rpm.items():
        h.node.create_subscription(Float32MultiArray, f"/{robot}/cmd_rpm", received.append, QoSProfile(depth=500))
    policy = OnnxPolicy(bundle)
    hover = np.full(4, CF2X.hover_rpm)
    t0 = h.now_ns()
    states = [robot_state(30, t0), robot_state(31, t0)]
    for robot, state in zip(("cf1", "cf2"), states, strict=True):
        h.odom_publishers[robot].publish(h.odometry(robot, state))
    assert h.spin_until(lambda: len(h.policy_node.controller.state.known.nonzero()[0]) == 2, 10.0)
    h.spin_until(lambda: False, 0.15)  # the replies to these samples arrive (fresh robots get no watchdog command)
    # the next cf2 sample, one period later, is answered by the policy (both robots known and fresh)
    n, controller = len(rpm["cf2"]), h.policy_node.controller
    last_action = controller.last_action.copy()  # what the robots received before: part of the observation
    states[1] = robot_state(32, h.now_ns())  # due: more than a control period after the first sample
    odometry = h.odometry("cf2", states[1])
    deadline = time.monotonic() + 10
    while len(rpm["cf2"]) == n and time.monotonic() < deadline:
        h.odom_publishers["cf2"].publish(odometry)
        h.spin_until(lambda: len(rpm["cf2"]) > n, 0.05)
    msg = rpm["cf2"][n]
    (dim,) = msg.layout.dim
    assert (dim.label, dim.size) == ("m1,m2,m3,m4", 4)
    obs = controller.observer.observe(controller.state, controller.targets, last_action)
    expected = policy.command(obs[1:2], agent_ids=[1])[0]
    got = np.frombuffer(msg.data, np.float32) if isinstance(msg.data, bytes) else np.asarray(msg.data, np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert not np.allclose(got, hover)
    # silence: within the stale timeout (plus a few periods) both robots get hover RPM from the watchdog
    n1 = len(rpm["cf1"])
    assert h.spin_until(lambda: len(rpm["cf1"]) > n1, 5.0)
    np.testing.assert_allclose(np.asarray(rpm["cf1"][-1].data, np.float32), hover, rtol=1e-6)


def test_policy_node_refuses_a_bundle_that_differs_from_the_declared_setup(vel_bundle: Path) -> None:
    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_BASE + 2)
    try:
        declared = [Parameter("bundle", value=str(vel_bundle)), Parameter("num_agents", value=4)]
        with pytest.raises(ValueError, match=r"num_agents: .* has 2, the caller declares 4"):
            PolicyNode(context=context, parameter_overrides=declared)
        robots = [Parameter("bundle", value=str(vel_bundle)), Parameter("robots", value=["cf1"])]
        with pytest.raises(ValueError, match="names 1"):
            PolicyNode(context=context, parameter_overrides=robots)
        lead = [Parameter("bundle", value=str(vel_bundle)), Parameter("warmup_lead_s", value=-0.001)]
        with pytest.raises(ValueError, match=r"'warmup_lead_s' must be >= 0 s \(0: no warm-up\), got -0.001"):
            PolicyNode(context=context, parameter_overrides=lead)
        diagnostics = [Parameter("bundle", value=str(vel_bundle)), Parameter("diagnostics_period_s", value=0.0)]
        with pytest.raises(ValueError, match=r"'diagnostics_period_s' must be > 0 s, got 0.0"):
            PolicyNode(context=context, parameter_overrides=diagnostics)
    finally:
        rclpy.try_shutdown(context=context)


def test_spin_until_shutdown_takes_an_error_during_shutdown_for_the_shutdown_and_raises_others() -> None:
    """An exception while the context goes down (as rclpy's signal thread shuts it) ends the spin cleanly."""

    class FailingExecutor:
        def spin_once(self, timeout_sec: float) -> None:
            raise RuntimeError("Unable to convert call argument '0' to Python object")

    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_BASE + 5)
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match="Unable to convert"):  # the context stays up: a real error
            spin_until_shutdown(FailingExecutor(), context)
        assert time.monotonic() - start >= SHUTDOWN_GRACE_S
        stopper = threading.Timer(0.2, context.try_shutdown)
        stopper.start()
        spin_until_shutdown(FailingExecutor(), context)  # the context goes down 0.2 s after the error: returns
        assert not context.ok()
        stopper.join()
    finally:
        rclpy.try_shutdown(context=context)


# ---------------------------------------------------------------------------------------------- processes
def ros_env(domain: int) -> dict[str, str]:
    return {**os.environ, "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain)}


def read_until(proc: subprocess.Popen, text: str, timeout_s: float) -> str:
    """The process's output up to the first line holding ``text``; AssertionError after ``timeout_s``."""
    seen, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 0.1)[0]:
            seen += proc.stdout.readline()
            if text in seen:
                return seen
    raise AssertionError(f"no {text!r} from {proc.args} within {timeout_s} s; output: {seen}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_policy_node_process_starts_from_the_bundle_parameters_and_stops_cleanly(vel_bundle: Path, sig) -> None:
    command = [sys.executable, "-m", "s2r_ros.policy_node", "--ros-args", "--params-file"]
    command += [str(vel_bundle / NODE_PARAMS_FILE), "-p", f"bundle:={vel_bundle}"]
    proc = subprocess.Popen(
        command, env=ros_env(DOMAIN_BASE + 3), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = read_until(proc, "policy drone-hover", 30.0)
        assert "for cf1, cf2: vel commands [m/s] on cmd_vel" in started
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


def test_node_process_runs_every_thread_at_its_realtime_priority_or_says_it_was_refused(vel_bundle: Path) -> None:
    command = [sys.executable, "-m", "s2r_ros.policy_node", "--ros-args", "--params-file"]
    command += [str(vel_bundle / NODE_PARAMS_FILE), "-p", f"bundle:={vel_bundle}", "-p", "realtime_priority:=3"]
    proc = subprocess.Popen(
        command, env=ros_env(DOMAIN_BASE + 6), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        permitted = may_go_realtime(3)
        said = read_until(proc, "real-time: SCHED_FIFO priority 3 on" if permitted else "normal priority", 30.0)
        threads = [int(tid) for tid in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(threads) > 1  # the executor's and the middleware's threads
        policies = {(os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority) for tid in threads}
        if permitted:
            assert policies == {(os.SCHED_FIFO, 3)}, said
        else:  # refused: the reason and the fix are in the log, and the node flies on at normal priority
            assert "CAP_SYS_NICE" in said and policies == {(os.SCHED_OTHER, 0)}, said
        time.sleep(0.5)  # a signal within milliseconds of the start can abort rclpy 9.1.2's EventsExecutor teardown
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("value", ["100", "50.0"])
def test_node_process_rejects_a_realtime_priority_that_is_not_an_integer_from_0_to_99(
    vel_bundle: Path, value: str
) -> None:
    command = [sys.executable, "-m", "s2r_ros.policy_node", "--ros-args", "--params-file"]
    command += [str(vel_bundle / NODE_PARAMS_FILE), "-p", f"bundle:={vel_bundle}", "-p", f"realtime_priority:={value}"]
    run = subprocess.run(command, env=ros_env(DOMAIN_BASE + 7), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "realtime_priority" in run.stderr, run.stdout + run.stderr
    with pytest.raises(ValueError, match="realtime_priority must be an integer from 0"):
        check_priority(int(value) if value.isdigit() else float(value))


@pytest.mark.skipif(importlib.util.find_spec("colcon_core") is None, reason="colcon is not installed (dev extra)")
def test_colcon_builds_the_workspace_and_installs_the_node(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            *(str(Path(sys.executable).with_name("colcon")), "--log-base", str(tmp_path / "log"), "build"),
            *("--base-paths", "src", "--build-base", str(tmp_path / "build")),
            *("--install-base", str(tmp_path / "install")),
        ],
        cwd=REPO / "ros2_ws",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    prefix = tmp_path / "install" / "s2r_ros"
    executable = prefix / "lib" / "s2r_ros" / "policy_node"
    assert executable.is_file() and os.access(executable, os.X_OK)
    share = prefix / "share"
    for path in ("s2r_ros/package.xml", "s2r_ros/config/policy.yaml", "s2r_ros/launch/policy.launch.py"):
        assert (share / path).is_file(), path
    assert (share / "ament_index" / "resource_index" / "packages" / "s2r_ros").is_file()
    # the installed executable runs from the installed package, and explains what it needs
    site = next(prefix.glob("lib/python3*/site-packages"))
    run = subprocess.run(
        [str(executable)],
        env={**ros_env(DOMAIN_BASE + 4), "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1 and "parameter 'bundle'" in run.stderr, run.stdout + run.stderr
