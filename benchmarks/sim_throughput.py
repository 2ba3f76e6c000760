"""Drone simulator throughput: env steps/s, drone-physics-steps/s, reset time and memory, both backends.

Usage: ``python benchmarks/sim_throughput.py --out benchmarks/results/sim_throughput.json [--quick]``

Each record: ``backend, num_envs, num_drones, effects, action_type, env_steps_per_s,
drone_physics_steps_per_s, physics_only_drone_steps_per_s, reset_ms_per_env, physics_reset_ms,
memory_mb``. Settings follow the anchor's measurement (gym-pybullet-drones, research note section 5):
240 Hz physics, 30 Hz control, random RPM actions of +-5 % around hover, the step loop timed for a fixed
wall-clock budget (auto-resets of finished envs are included in our step time; they are state writes).
Rates are the median of ``--repeats`` runs. One thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from sim2real import __version__
from sim2real.envs import make

ALL_EFFECTS = ("ground", "drag", "downwash")
ANCHOR = {
    "source": "gym-pybullet-drones 2.1.0 measured on this machine (research note, section 5)",
    "env_steps_per_s_no_effects": {"1": 2016, "4": 581, "8": 288},
    "env_steps_per_s_all_effects": {"1": 569, "4": 150, "8": 68},
    "drone_physics_steps_per_s": 18000,
    "reset_ms_per_drone": [35, 50],
}


def measure(
    backend: str,
    num_envs: int,
    num_drones: int,
    effects: tuple[str, ...],
    action_type: str,
    seconds: float,
    repeats: int,
) -> dict:
    env = make(
        "drone-hover",
        num_envs=num_envs,
        num_drones=num_drones,
        backend=backend,
        effects=effects,
        action_type=action_type,
        rpm_range=0.05,
        seed=0,
    )
    try:
        rng = np.random.default_rng(0)
        env.reset()
        actions = [rng.uniform(-1, 1, env.action_space.shape).astype(np.float32) for _ in range(16)]
        rates = []
        for _ in range(repeats):
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                env.step(actions[steps % 16])
                steps += 1
            rates.append(steps / (time.perf_counter() - start))
        step_rate = statistics.median(rates)

        reset_times = []
        for _ in range(5 if backend == "pybullet" else 20):
            t = time.perf_counter()
            env.reset()
            reset_times.append(time.perf_counter() - t)

        # Physics alone: the backend's step with hover RPM, and its full-batch state write.
        sim = env.sim
        rpm = np.full((num_envs, num_drones, 4), env.model.hover_rpm)
        n = max(20, int(2000 / num_envs)) if backend == "batched" else 200
        t = time.perf_counter()
        for _ in range(n):
            sim.step(rpm)
        physics_rate = n * num_envs * num_drones / (time.perf_counter() - t)
        pos, quat = sim.pos.copy(), sim.quat.copy()
        t = time.perf_counter()
        for _ in range(20):
            sim.set_state(None, pos, quat)
        physics_reset_ms = (time.perf_counter() - t) / 20 * 1e3
    finally:
        env.close()
    return {
        "backend": backend,
        "num_envs": num_envs,
        "num_drones": num_drones,
        "effects": list(effects),
        "action_type": action_type,
        "env_steps_per_s": round(step_rate * num_envs, 1),
        "drone_physics_steps_per_s": round(step_rate * num_envs * num_drones * env.substeps, 1),
        "physics_only_drone_steps_per_s": round(physics_rate, 1),
        "reset_ms_per_env": round(statistics.median(reset_times) / num_envs * 1e3, 4),
        "physics_reset_ms": round(physics_reset_ms, 4),
        "step_rate_runs": [round(r, 2) for r in rates],
    }


def peak_memory_mb(num_envs: int, num_drones: int, effects: tuple[str, ...], action_type: str) -> float:
    """Peak traced memory [MB] of building and stepping a batched env (numpy reports to tracemalloc)."""
    tracemalloc.start()
    env = make(
        "drone-hover",
        num_envs=num_envs,
        num_drones=num_drones,
        backend="batched",
        effects=effects,
        action_type=action_type,
        seed=0,
    )
    env.reset()
    for _ in range(3):
        env.step(np.zeros(env.action_space.shape, dtype=np.float32))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    env.close()
    return round(peak / 2**20, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seconds", type=float, default=2.0, help="wall-clock seconds per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median)")
    parser.add_argument("--quick", action="store_true", help="small grid, short runs (smoke check)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeats = 0.3, 1

    grid = []
    for n in (1, 4, 8):
        for eff in ((), ALL_EFFECTS):
            grid.append(("pybullet", 1, n, eff, "rpm"))
    batch_sizes = (1, 64) if args.quick else (1, 64, 1024, 4096)
    for e in batch_sizes:
        for eff in ((), ALL_EFFECTS):
            grid.append(("batched", e, 4, eff, "rpm"))
    for e in (64,) if args.quick else (1024,):
        grid.append(("batched", e, 4, ALL_EFFECTS, "vel"))

    records = []
    for backend, e, n, eff, act in grid:
        rec = measure(backend, e, n, eff, act, args.seconds, args.repeats)
        if backend == "batched":
            rec["memory_mb"] = peak_memory_mb(e, n, eff, act)
        records.append(rec)
        print(
            f"{backend:>8s} envs={e:<5d} drones={n} effects={'all' if eff else 'none':<4s} act={act}: "
            f"{rec['env_steps_per_s']:>10.1f} env-steps/s {rec['drone_physics_steps_per_s'] / 1e6:7.3f} M "
            f"drone-physics-steps/s, reset {rec['reset_ms_per_env']:.3f} ms/env",
            flush=True,
        )

    out = {
        "benchmark": "sim_throughput",
        "sim2real_version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "pyb_freq": 240,
        "ctrl_freq": 30,
        "anchor": ANCHOR,
        "records": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
