"""Hot cost of one policy-node step without ROS: ``SwarmController.on_state_rows`` for a burst of robot states.

    python benchmarks/controller_step.py --out benchmarks/results/controller_step.json

The committed 4-drone hover bundle (``tests/data/hover4_bundle``, onnxruntime, one thread) at 100 Hz: each call
hands the controller fresh state rows of 1 or of all 4 robots (a swarm driver's burst, as the policy node reads it)
and returns their guarded commands: observations, input faults, one inference, command guard. States are built
before the timing.
Reported per call in microseconds (p50, p99 over ``--calls`` calls after a warm-up), and per robot.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from sim2real import __version__
from sim2real.deploy import RobotState, SwarmController
from sim2real.export import OnnxPolicy

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "tests" / "data" / "hover4_bundle"
PERIOD_NS = 10_000_000  # 100 Hz


def hover_state(target: np.ndarray, stamp_ns: int, rng: np.random.Generator) -> RobotState:
    """A robot hovering near ``target [3]`` [m]: 1 cm position and 5 cm/s velocity noise, level."""
    level = np.array([0.0, 0.0, 0.0, 1.0])
    return RobotState(target + rng.normal(0.0, 0.01, 3), level, rng.normal(0.0, 0.05, 3), np.zeros(3), stamp_ns)


def measure(controller: SwarmController, targets: np.ndarray, burst: int, calls: int) -> dict[str, float]:
    """Per-call timings of ``on_state_rows`` with the first ``burst`` robots' states (after 500 warm-up calls)."""
    rng = np.random.default_rng(0)
    warmup, start_ns = 500, 10**9
    stamps = [start_ns + k * PERIOD_NS for k in range(warmup + calls)]
    agents = list(range(burst))
    rows = [np.stack([hover_state(targets[agent], stamp, rng).row() for agent in agents]) for stamp in stamps]
    times = np.empty(warmup + calls)
    for k, (burst_rows, now) in enumerate(zip(rows, stamps, strict=True)):
        t0 = time.perf_counter_ns()
        commands = controller.on_state_rows(agents, burst_rows, [now] * burst, now)
        times[k] = time.perf_counter_ns() - t0
    if len(commands) != burst or any(c.guarded.fault is not None for c in commands):
        raise RuntimeError(f"the robots did not fly: {commands}")
    us = times[warmup:] / 1e3
    p50 = float(np.percentile(us, 50))
    return {"p50_us": p50, "p99_us": float(np.percentile(us, 99)), "p50_us_per_robot": p50 / burst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    policy = OnnxPolicy(BUNDLE)
    n = int(policy.contract["num_agents"])
    targets = np.array([[0.0, 0.0, 1.0], [0.5, 0.0, 1.0], [0.0, 0.5, 1.0], [0.5, 0.5, 1.0]])[:n]
    results = {}
    for burst in (1, n):
        controller = SwarmController(policy, targets=targets, rate_hz=100.0, max_step_fraction=0.25)
        results[f"burst_{burst}"] = measure(controller, targets, burst, args.calls)
        print(f"burst of {burst}: {results[f'burst_{burst}']}", flush=True)
    out = {
        "benchmark": "controller_step",
        "bundle": str(BUNDLE.relative_to(ROOT)),
        "calls": args.calls,
        "results": results,
        "sim2real_version": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
