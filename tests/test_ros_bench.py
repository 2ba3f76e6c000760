"""The ROS 2 bench: launcher isolation and teardown, the recorder node on a real DDS graph, bag metrics.

Every ROS process runs through ``BenchLauncher``: its own ``ROS_DOMAIN_ID`` (locked, 100-200) and
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, so nothing leaves the loopback interface.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sim2real.bench.launcher import BenchLauncher, ProcessDiedError, ProcessSpec, reserve_domain_id

ROOT = Path(__file__).resolve().parents[1]
BENCH_PACKAGE = ROOT / "ros2_ws" / "src" / "s2r_bench"
TALKER = Path(__file__).with_name("bench_talker.py")
COUNT = 100
needs_ros = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("rclpy", "rosbags", "mcap_ros2")),
    reason="needs the ros extra (rclpy, rosbags, mcap-ros2-support)",
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def recorder_spec(bag: Path) -> ProcessSpec:
    """The recorder node run from the source tree (``python -m``), recording the ``/cf1`` topics."""
    path = os.pathsep.join(filter(None, [str(BENCH_PACKAGE), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "s2r_bench.recorder_node", "--ros-args"]
    argv += ["-p", f"output_dir:={bag}", "-p", "topic_regex:=^/cf1/"]
    return ProcessSpec("recorder", argv, env={"PYTHONPATH": path})


def talker_spec(name: str) -> ProcessSpec:
    return ProcessSpec(name, [sys.executable, str(TALKER), str(COUNT), "100"])


def read_with_mcap(bag: Path) -> dict[str, list]:
    """Topic -> decoded messages of the bag's MCAP file, with the mcap library (not the bag's writer)."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (mcap_file,) = bag.glob("*.mcap")
    messages: dict[str, list] = {}
    with open(mcap_file, "rb") as f:
        for _, channel, _, decoded in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            messages.setdefault(channel.topic, []).append(decoded)
    return messages


@needs_ros
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_recorder_bag_of_isolated_run_reads_back_independently(tmp_path: Path, stop_signal: signal.Signals) -> None:
    bag = tmp_path / "run" / "bag"
    started_ns = time.time_ns()
    with BenchLauncher(tmp_path / "other") as other, BenchLauncher(tmp_path / "run") as bench:
        assert other.domain_id != bench.domain_id
        other.start(talker_spec("outsider"))  # same topics, another domain: must never see the recorder
        bench.start(recorder_spec(bag))
        bench.wait_for_output("recorder", "recording to", timeout_s=30)
        bench.start(talker_spec("talker"))
        bench.wait_for_output("talker", f"published {COUNT}", timeout_s=30)
        bench.run_for(0.3)
        if stop_signal == signal.SIGTERM:
            os.killpg(bench.pid("recorder"), signal.SIGTERM)
            assert bench.wait_for_exit("recorder", timeout_s=10).returncode == 0
        exits = bench.stop()
        other.check_alive()
        assert "published" not in (other.log_dir / "outsider.log").read_text()

    assert exits["recorder"].returncode == 0 and exits["talker"].returncode == 0
    assert exits["talker"].stopped_by == "SIGINT"
    assert exits["recorder"].stopped_by == ("SIGINT" if stop_signal == signal.SIGINT else "exited")
    assert 0 < exits["talker"].cpu_percent < 100  # measured just before the stop; a process that exited has none
    assert (exits["recorder"].cpu_percent is None) == (stop_signal == signal.SIGTERM)
    messages = read_with_mcap(bag)
    assert set(messages) == {"/cf1/cmd_vel", "/cf1/odom"}
    commands = messages["/cf1/cmd_vel"]
    assert len(commands) == COUNT  # reliable, depth COUNT: every message
    assert [c.twist.linear.x for c in commands] == list(range(COUNT))
    assert [(c.header.stamp.sec, c.header.stamp.nanosec) for c in commands] == [(i, i * 1000) for i in range(COUNT)]
    odometry = messages["/cf1/odom"]
    assert 0.9 * COUNT < len(odometry) <= COUNT  # best effort
    assert all(o.pose.pose.position.x == o.header.stamp.sec / 2 for o in odometry)
    metadata = (bag / "metadata.yaml").read_text()
    assert "storage_identifier: mcap" in metadata and f"message_count: {COUNT + len(odometry)}" in metadata
    from mcap.reader import make_reader

    (mcap_file,) = bag.glob("*.mcap")
    with open(mcap_file, "rb") as f:  # records are written in receive-time order, times on the host's clock
        times = [message.log_time for _, _, message in make_reader(f).iter_messages(log_time_order=False)]
    assert times == sorted(times) and started_ns < times[0] and times[-1] < time.time_ns()


def test_launcher_isolates_each_run_in_a_locked_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = reserve_domain_id(range(150, 152), lock_dir=tmp_path)
    second = reserve_domain_id(range(150, 152), lock_dir=tmp_path)
    assert {first.domain_id, second.domain_id} == {150, 151}
    with pytest.raises(RuntimeError, match="held by other runs"):
        reserve_domain_id(range(150, 152), lock_dir=tmp_path)
    first.release()
    assert reserve_domain_id(range(150, 152), lock_dir=tmp_path).domain_id == first.domain_id

    monkeypatch.setenv("ROS_STATIC_PEERS", "10.0.0.1")
    monkeypatch.setenv("ROS_DOMAIN_ID", "0")
    show = "import os; e = os.environ; print('env', e['ROS_DOMAIN_ID'], e['ROS_AUTOMATIC_DISCOVERY_RANGE'], "
    show += "e.get('ROS_STATIC_PEERS'), os.getpgid(0) == os.getpid())"
    with BenchLauncher(tmp_path / "run") as bench:
        bench.start(ProcessSpec("show", python(show), env={"ROS_DOMAIN_ID": "7"}))
        assert bench.wait_for_exit("show", timeout_s=20).returncode == 0
        assert f"env {bench.domain_id} LOCALHOST None True" in (tmp_path / "run" / "logs" / "show.log").read_text()
        assert 100 <= bench.domain_id <= 200


def test_launcher_names_the_process_that_died_early_and_tears_down(tmp_path: Path) -> None:
    bench = BenchLauncher(tmp_path)
    with pytest.raises(ProcessDiedError) as died, bench:
        bench.start(ProcessSpec("sleeper", python("import time; time.sleep(60)")))
        bench.start(ProcessSpec("crasher", python("import sys; print('bad config'); sys.exit(3)")))
        sleeper = bench.pid("sleeper")
        bench.run_for(20)
    assert died.value.name == "crasher" and died.value.returncode == 3
    message = str(died.value)
    assert "'crasher'" in message and str(tmp_path / "logs" / "crasher.log") in message and "bad config" in message
    assert bench.exits["sleeper"].stopped_by == "SIGINT" and bench.exits["sleeper"].returncode == -signal.SIGINT
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper, 0)


def test_launcher_stops_with_sigint_even_when_its_caller_ignores_sigint(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job (`cmd &` in a script)
    try:
        with BenchLauncher(tmp_path, sigint_timeout_s=5.0) as bench:
            bench.start(ProcessSpec("sleeper", python("print('ready', flush=True); import time; time.sleep(60)")))
            bench.wait_for_output("sleeper", "ready", timeout_s=20)
            exits = bench.stop()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (exits["sleeper"].stopped_by, exits["sleeper"].returncode) == ("SIGINT", -signal.SIGINT)


def _gone(pid: int, timeout_s: float = 2.0) -> bool:
    """The process has exited (no longer in /proc, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


def test_launcher_escalates_to_sigterm_and_sigkill(tmp_path: Path) -> None:
    ignore = "import signal, subprocess, time\n"
    deaf_to_int = ignore + "signal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"
    deaf = ignore + "for s in (signal.SIGINT, signal.SIGTERM): signal.signal(s, signal.SIG_IGN)\n"
    deaf += "print('ready', flush=True)\ntime.sleep(60)"
    # the leader dies on SIGINT; its child ignores SIGINT and SIGTERM and must still be killed
    parent = ignore + "child = subprocess.Popen(['sleep', '60'], preexec_fn=lambda: [signal.signal(s, signal.SIG_IGN) "
    parent += "for s in (signal.SIGINT, signal.SIGTERM)])\nprint('child', child.pid, flush=True)\ntime.sleep(60)"
    with BenchLauncher(tmp_path, sigint_timeout_s=0.5, sigterm_timeout_s=0.5) as bench:
        bench.start(ProcessSpec("deaf_to_int", python(deaf_to_int)))
        bench.start(ProcessSpec("deaf", python(deaf)))
        bench.start(ProcessSpec("parent", python(parent)))
        for name in ("deaf_to_int", "deaf"):
            bench.wait_for_output(name, "ready", timeout_s=20)
        bench.wait_for_output("parent", "child", timeout_s=20)
        child = int(bench.output("parent").split()[1])
        started = time.monotonic()
        exits = bench.stop()
        took = time.monotonic() - started
    assert (exits["deaf_to_int"].stopped_by, exits["deaf_to_int"].returncode) == ("SIGTERM", -signal.SIGTERM)
    assert (exits["deaf"].stopped_by, exits["deaf"].returncode) == ("SIGKILL", -signal.SIGKILL)
    assert (exits["parent"].stopped_by, exits["parent"].returncode) == ("SIGINT", -signal.SIGINT)
    assert _gone(child)
    assert took < 30.0  # the escalation ended them: nothing waited for their 60 s sleeps


# --- metrics on a bag with known stamps and receive times ---------------------------------------------------------

T0 = 1_700_000_000 * 10**9  # ns
MS = 10**6


@needs_ros
def test_metrics_of_a_known_bag(tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import TwistStamped
    from nav_msgs.msg import Odometry
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import String
    from typer.testing import CliRunner

    from sim2real.bench.metrics import BenchTopics, compute_metrics
    from sim2real.cli import app

    records: list[tuple[int, str, object]] = []  # (receive time ns, topic, message)

    def stamped(cls: type, stamp_ns: int) -> object:
        msg = cls()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        return msg

    def truth(stamp_ns: int, xyz: tuple[float, float, float]) -> object:
        msg = stamped(Odometry, stamp_ns)
        # floats: rclpy 9.1.2 accepts an int in a float64 field but serialises its bits unconverted
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = map(float, xyz)
        return msg

    # cf1: odometry at 100 Hz for 1 s with message 50 lost; the k-th answer arrives k ms after its stamp,
    # plus one repeated answer and one watchdog command stamped with its send time
    kept = [i for i in range(101) if i != 50]
    for k, i in enumerate(kept, start=1):
        stamp = T0 + i * 10 * MS
        records += [(stamp + MS // 2, "/cf1/odom", stamped(Odometry, stamp))]
        records += [(stamp + k * MS, "/cf1/cmd_vel", stamped(TwistStamped, stamp))]
    records += [(T0 + 10 * MS + 7 * MS, "/cf1/cmd_vel", stamped(TwistStamped, T0 + 10 * MS))]  # repeated
    # cf1's odometry before a hop: 0.2 ms after its stamp (0.3 ms before odom), once more later for stamp 30,
    # never for stamp 20 (its answer is left out of the stages); cf2 has none (left out)
    for i in kept:
        stamp = T0 + i * 10 * MS
        records += [(stamp + MS // 5, "/cf1/odom_raw", stamped(Odometry, stamp))] if i != 20 else []
        records += [(stamp + 2 * MS // 5, "/cf1/odom_raw", stamped(Odometry, stamp))] if i == 30 else []
    records += [(T0 + 505 * MS + 1000, "/cf1/cmd_vel", stamped(TwistStamped, T0 + 505 * MS))]  # watchdog
    # cf2: 50 Hz for 0.2 s, every answer 5 ms late
    for i in range(11):
        stamp = T0 + i * 20 * MS
        records += [
            (stamp, "/cf2/odom", stamped(Odometry, stamp)),
            (stamp + 5 * MS, "/cf2/cmd_vel", stamped(TwistStamped, stamp)),
        ]
    # diagnostics at 1 Hz: cf1 goes stale twice, cf2 warns once
    levels = {"cf1": ["OK", "STALE", "STALE"], "cf2": ["OK", "OK", "WARN"]}
    for n in range(3):
        array = stamped(DiagnosticArray, T0 + n * 10**9)
        for robot, robot_levels in levels.items():
            values = {
                "fault": "stale",
                "entries_stale": str(n),
                "entries_missing": "0",
                "safe_commands": str(4 * n + 1),
            }
            array.status.append(
                DiagnosticStatus(
                    level=getattr(DiagnosticStatus, robot_levels[n]),
                    name=f"policy: {robot}",
                    hardware_id=robot,
                    values=[KeyValue(key=key, value=value) for key, value in values.items()],
                )
            )
        records += [(T0 + n * 10**9 + MS, "/diagnostics", array)]
    # ground truth at three shared stamps: cf2 comes within 0.1 m, leaves, then comes within 0.05 m of cf1
    paths = {"cf1": [(0, 0, 1), (0, 0, 2), (3, 4, 1)], "cf2": [(0.1, 0, 1), (5, 5, 5), (3, 4, 1.05)]}
    for robot, path in paths.items():
        records += [(T0 + n * 10**8, f"/{robot}/truth", truth(T0 + n * 10**8, xyz)) for n, xyz in enumerate(path)]
    events = [json.dumps({"kind": kind, "agent": 0}) for kind in ("obs.noise", "obs.noise", "timing.delay")]
    report = json.dumps([{"kind": "obs.noise", "hits": 3}, {"kind": "timing.delay", "hits": 2}])  # the node's form
    for n, event in enumerate([*events, "not json", report]):
        records += [(T0 + n * MS, "/bench/perturbation_events", String(data=event))]

    bag = tmp_path / "bag"
    typestore = get_typestore(Stores.ROS2_KILTED)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for recv_ns, topic, msg in sorted(records, key=lambda record: record[0]):
            if topic not in connections:
                msgtype = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore)
            writer.write(connections[topic], recv_ns, serialize_message(msg))

    options = ["--rate", "/cf2/odom=50", "--rate", "/*/odom=100", "--rate", "/cf2/cmd_vel=50", "--target", "cf1=0,0,1"]
    options += ["--collision-distance", "0.2", "--stages", "odom_raw,odom"]
    options += ["--out", str(tmp_path / "metrics" / "summary.json")]
    result = CliRunner().invoke(app, ["bench", "metrics", str(bag), *options])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "metrics" / "summary.json").read_text())
    assert summary == compute_metrics(
        bag,
        nominal_rates={"/cf2/odom": 50.0, "/*/odom": 100.0, "/cf2/cmd_vel": 50.0},
        targets={"cf1": [0, 0, 1]},
        collision_distance_m=0.2,
        topics=BenchTopics(stages=("odom_raw", "odom")),
    )
    # cf1's answers k = 1..100 ms after the stamp, but k = 21 (stamp 20): 0.2 + 0.3 + (k - 0.5) ms
    stages = summary["overall"]["latency_stages_ms"]
    assert list(stages) == ["stamp -> odom_raw", "odom_raw -> odom", "odom -> command"]
    assert [s["count"] for s in stages.values()] == [99, 99, 99]
    assert stages["stamp -> odom_raw"]["max_ms"] == pytest.approx(0.2)
    assert stages["odom_raw -> odom"]["p50_ms"] == pytest.approx(0.3)
    assert stages["odom -> command"]["mean_ms"] == pytest.approx((5050 - 21) / 99 - 0.5)
    assert "by stage p50 / p99: stamp -> odom_raw 0.20 / 0.20, odom_raw -> odom 0.30 / 0.30, odom -> command" in (
        result.output
    )
    assert compute_metrics(bag)["overall"]["latency_stages_ms"] is None
    # a latency window from 505 ms: cf1's answers to stamps 0-450 ms (received by 496 ms) and all of cf2's are
    # before it; the repeat of stamp 10 ms stays a repeat
    windowed = compute_metrics(bag, latency_from_ns=T0 + 505 * MS, topics=BenchTopics(stages=("odom_raw", "odom")))
    assert windowed["robots"]["cf1"]["commands"] == {"answered": 54, "repeated": 1, "unmatched": 1, "before_window": 46}
    assert windowed["robots"]["cf1"]["latency_ms"]["mean_ms"] == pytest.approx(73.5)  # answers 47-100 ms late
    assert windowed["robots"]["cf2"]["latency_ms"]["count"] == 0
    assert windowed["robots"]["cf2"]["commands"]["before_window"] == 11
    assert windowed["overall"]["latency_stages_ms"]["odom -> command"]["count"] == 54
    options = ["--stages", "odom_raw,odom", "--latency-from", str(T0 + 505 * MS), "--out", str(tmp_path / "w.json")]
    in_window = CliRunner().invoke(app, ["bench", "metrics", str(bag), *options])
    assert in_window.exit_code == 0, in_window.output
    assert json.loads((tmp_path / "w.json").read_text()) == windowed
    assert result.output.startswith(f"bag {bag}: robots cf1, cf2\n")
    lat = summary["overall"]["latency_ms"]
    assert f"latency p50 / p99: {lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms (111 commands)" in result.output
    assert "tracking error (all truth messages): 2.000 m; min separation 0.050 m, collisions 2" in result.output
    assert "failsafe entries 4, stale reports 2, drops 1, perturbation hits 9" in result.output
    for bad, says in (
        (["--rate", "/*/odom"], "is not PATTERN=HZ"),
        (["--rate", "/*/odom=-5"], "is not a rate in Hz > 0"),
        (["--rate", "/*/odom=inf"], "is not a rate in Hz > 0"),
        (["--target", "cf1=0,1"], "is not X,Y,Z"),
        (["--target", "cf1=0,nan,1"], "is not X,Y,Z"),
        (["--stages", "/cf1/odom"], "per-robot topic names without the robot"),
        (["--stages", "odom_raw,,odom"], "per-robot topic names without the robot"),
    ):
        rejected = CliRunner().invoke(app, ["bench", "metrics", str(bag), "--out", str(tmp_path / "x.json"), *bad])
        assert rejected.exit_code == 2 and says in rejected.output, rejected.output
    missing = CliRunner().invoke(app, ["bench", "metrics", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert missing.exit_code == 2 and "is not a rosbag2 directory" in missing.output
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    broken = CliRunner().invoke(app, ["bench", "metrics", str(tmp_path / "broken"), "--out", str(tmp_path / "x.json")])
    assert broken.exit_code == 2 and "cannot read the bag" in broken.output, broken.output
    assert not (tmp_path / "x.json").exists()

    cf1, cf2 = summary["robots"]["cf1"], summary["robots"]["cf2"]
    assert cf1["commands"] == {"answered": 100, "repeated": 1, "unmatched": 1, "before_window": 0}
    assert cf1["latency_ms"] == {
        "count": 100,
        "p50_ms": 50.5,
        "p99_ms": pytest.approx(99.01, abs=1e-9),
        "max_ms": 100.0,
        "mean_ms": 50.5,
    }
    assert cf2["latency_ms"]["count"] == 11 and cf2["latency_ms"]["p99_ms"] == 5.0
    pooled = np.r_[np.arange(1, 101), np.full(11, 5.0)]
    assert summary["overall"]["latency_ms"]["p50_ms"] == pytest.approx(np.percentile(pooled, 50))
    assert summary["overall"]["latency_ms"]["max_ms"] == 100.0

    topics = summary["topics"]
    assert topics["/cf1/odom"]["count"] == 100 and topics["/cf1/odom"]["rate_hz"] == pytest.approx(99.0)
    assert (topics["/cf1/odom"]["drops"], topics["/cf1/odom"]["drop_rate"]) == (1, pytest.approx(1 / 101))
    assert topics["/cf2/odom"]["rate_hz"] == pytest.approx(50.0) and topics["/cf2/odom"]["drops"] == 0
    assert topics["/cf2/cmd_vel"]["nominal_rate_hz"] == 50.0 and topics["/cf2/cmd_vel"]["drops"] == 0
    assert "drops" not in topics["/cf1/cmd_vel"]
    assert summary["overall"]["drops"] == 1

    assert cf1["diagnostics"]["levels"] == {"OK": 1, "STALE": 2} and cf1["diagnostics"]["stale_reports"] == 2
    assert cf1["diagnostics"]["counters"] == {"entries_stale": 2, "entries_missing": 0, "safe_commands": 9}
    assert cf1["diagnostics"]["failsafe_entries"] == 2
    assert cf2["diagnostics"]["levels"] == {"OK": 2, "WARN": 1} and cf2["diagnostics"]["stale_reports"] == 0
    assert summary["overall"]["stale_reports"] == 2 and summary["overall"]["failsafe_entries"] == 4

    assert cf1["tracking_error"] == {"samples": 3, "mean_m": 2.0, "max_m": 5.0, "final_m": 5.0}
    assert "tracking_error" not in cf2
    assert summary["overall"]["min_separation_m"] == pytest.approx(0.05)
    assert summary["overall"]["collisions"] == 2
    assert summary["perturbation_events"] == {
        "messages": 5,
        "count": 6,
        "hits": 9,
        "by_kind": {"obs.noise": 5, "timing.delay": 3, "unknown": 1},
    }
