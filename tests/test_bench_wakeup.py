"""The host wake-up probe (``sim2real.bench.wakeup``): lateness, skipped deadlines, the process and its file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import may_go_realtime

from sim2real.bench.wakeup import Wakeups, load_wakeups, main, measure_wakeups, save_wakeups


def test_probe_records_lateness_and_skips_the_deadlines_a_stall_passed() -> None:
    """A 60 ms stall at the 20th deadline is one wake-up about 60 ms late, not 30 late ones, and the deadlines
    after it keep the 2 ms grid. The host's own stalls may skip deadlines too: each wake-up skips exactly the
    deadlines its lateness passed, whatever made it late."""
    calls = []

    def running() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 20:
            time.sleep(0.060)  # the machine stalls the probe
        return len(calls) <= 100

    started = time.time_ns()
    times, lateness = measure_wakeups(0.002, running)
    times, lateness = np.frombuffer(times, dtype=np.int64), np.frombuffer(lateness, dtype=np.int64)
    assert len(times) == len(lateness) == 100
    assert np.all(lateness >= 0) and np.all(np.diff(times) > 0) and times[0] >= started
    stalled = np.flatnonzero(lateness > 40e6)
    assert stalled.tolist() == [19], lateness[15:25] / 1e6  # the wake-up after the stall, once
    assert 55e6 < lateness[19] < 100e6
    steps = np.diff(times - lateness) / 2e6  # between deadlines, in periods (wall clock less the lateness)
    on_grid = np.abs(steps - np.round(steps)) < 0.1  # off only where the two clocks were read a preemption apart
    assert on_grid.sum() >= 95 and round(steps[19]) in (30, 31), steps  # whole periods; the stall skipped 29-30
    skipped = lateness[:-1] // 2_000_000  # the deadlines that passed before each wake-up
    assert np.all(np.round(steps)[on_grid] == (skipped + 1)[on_grid]), (steps, lateness / 1e6)
    assert (skipped == 0).sum() >= 50, lateness / 1e6  # most wake-ups on time: the test measured a probe, not stalls


def test_summary_covers_the_flight_window_in_milliseconds(tmp_path: Path) -> None:
    times = np.arange(10, dtype=np.int64) * 10**9
    lateness = np.arange(10, dtype=np.int64) * 10**5  # 0, 0.1, ..., 0.9 ms
    save_wakeups(tmp_path / "w.npz", times, lateness, 0.005, 99)
    wakeups = load_wakeups(tmp_path / "w.npz")
    assert isinstance(wakeups, Wakeups) and (wakeups.period_s, wakeups.priority) == (0.005, 99)
    whole = wakeups.summary()
    assert whole["wakeup_lateness_ms"]["count"] == 10 and whole["wakeup_lateness_ms"]["max_ms"] == pytest.approx(0.9)
    assert (whole["period_ms"], whole["priority"]) == (5.0, 99)
    window = wakeups.summary(2 * 10**9, 5 * 10**9)["wakeup_lateness_ms"]  # the wake-ups at 2, 3, 4 and 5 s
    assert window["count"] == 4 and window["p50_ms"] == pytest.approx(0.35) and window["max_ms"] == pytest.approx(0.5)
    assert wakeups.summary(20 * 10**9)["wakeup_lateness_ms"]["p99_ms"] is None  # none in the window


def test_probe_process_stops_on_sigterm_and_writes_its_wakeups(tmp_path: Path) -> None:
    out = tmp_path / "wakeups.npz"
    probe = subprocess.Popen(
        [sys.executable, "-m", "sim2real.bench.wakeup", "--out", str(out), "--period-ms", "5", "--priority", "99"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)
    probe.send_signal(signal.SIGTERM)
    stdout, stderr = probe.communicate(timeout=10)
    assert probe.returncode == 0, stderr
    wakeups = load_wakeups(out)
    expected = 99 if may_go_realtime(99) else 0
    assert wakeups.priority == expected and wakeups.period_s == 0.005
    assert ("running at normal priority" in stderr) == (expected == 0), stderr
    assert f"{len(wakeups.time_ns)} wake-ups at SCHED_FIFO {expected}" in stdout
    assert 100 < len(wakeups.time_ns) <= 400  # about 200 a second once started (imports take some of the 2 s)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--period-ms", "0"], "--period-ms must be > 0, got 0.0"),
        (["--priority", "100"], "--priority: realtime_priority must be an integer from 0"),
    ],
)
def test_probe_rejects_bad_arguments(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "w.npz"), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "w.npz").exists()
