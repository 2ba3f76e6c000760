"""PyBullet versus batched backend: how far apart the same open-loop RPM schedule ends up, and when.

Usage: ``python benchmarks/physics_parity.py --out benchmarks/results/physics_parity.json``

For each scenario (damping 0) the script records the largest position [m] and attitude [rad] gap up to
several horizons, the first ground contact on each backend, and the gaps before and after it. Scenarios
follow the anchor's reference set (gym-pybullet-drones research note, section 5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sim2real.envs.drones import CF2X, simulate_rpm, trajectory_gap

FREQ = 240
HORIZONS_S = (0.25, 0.5, 1.0, 2.0, 3.0)


def schedule(name: str, seconds: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Initial positions ``[N, 3]`` and an RPM schedule ``[T, N, 4]`` for a named scenario."""
    steps = int(seconds * FREQ)
    if name == "dwpair":
        return np.array([[0, 0, 0.5], [0.05, 0, 1.5]]), np.full((steps, 2, 4), CF2X.hover_rpm)
    rpm = np.full((steps, 1, 4), CF2X.hover_rpm)
    if name.startswith("motor0step"):
        rpm[FREQ : FREQ + FREQ // 2, 0, 0] *= 1.05
    elif name == "motor0pulse_z1":
        rpm[FREQ : FREQ + FREQ // 20, 0, 0] *= 1.05
    elif name == "yawpulse_z1":
        rpm[FREQ : FREQ + FREQ // 2, 0] *= [1.05, 0.95, 1.05, 0.95]
    z = 20.0 if name.endswith("z20") else 1.0
    return np.array([[0.0, 0.0, z]]), rpm


def first_contact(out: dict) -> float | None:
    hits = np.nonzero(out["ground_contact"].any(axis=1))[0]
    return float(out["t"][hits[0]]) if hits.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = []
    for name in ("motor0step_z1", "motor0step_z20", "motor0pulse_z1", "yawpulse_z1", "dwpair"):
        for effects in ((), ("ground", "drag", "downwash")):
            pos0, rpm = schedule(name)
            runs = {
                b: simulate_rpm("cf2x", pos0, np.zeros_like(pos0), rpm, backend=b, effects=effects)
                for b in ("pybullet", "batched")
            }
            pyb, bat = runs["pybullet"], runs["batched"]
            rec = {
                "scenario": name,
                "effects": list(effects),
                "contact_s": {"pybullet": first_contact(pyb), "batched": first_contact(bat)},
                "gap_by_horizon": {},
            }
            for h in HORIZONS_S:
                dp, da = trajectory_gap(pyb, bat, int(h * FREQ))
                rec["gap_by_horizon"][str(h)] = {"pos_m": dp, "angle_rad": da}
            contact = [t for t in rec["contact_s"].values() if t is not None]
            if contact:
                row = int(min(contact) * FREQ) - 1
                dp, da = trajectory_gap(pyb, bat, row)
                rec["gap_before_contact"] = {"pos_m": dp, "angle_rad": da}
                rec["final_pos"] = {"pybullet": pyb["pos"][-1].tolist(), "batched": bat["pos"][-1].tolist()}
            records.append(rec)
            g = rec["gap_by_horizon"]
            print(
                f"{name:>15s} effects={'all' if effects else 'none':4s} contact={rec['contact_s']} "
                f"gap@1s={g['1.0']['pos_m']:.2e} m gap@3s={g['3.0']['pos_m']:.2e} m"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "physics_parity", "pyb_freq": FREQ, "records": records}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
