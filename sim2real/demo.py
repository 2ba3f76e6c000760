"""The end-to-end demo on the built-in defaults: a scripted swarm flight.

A velocity-command policy written by hand (proportional to the observed target offset, plus the target's
velocity, minus a push away from close neighbours) flies ``drone-formation`` through the PID controller on
both backends, PyBullet with all aerodynamic effects as "reality" and the batched twin. The demo prints a
summary, writes it as JSON and, when matplotlib is installed, plots the trajectories. Later issues replace
the scripted policy with a trained and exported one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sim2real.envs import make


def scripted_velocity_policy(
    obs: np.ndarray, fields: dict[str, slice], gain: float = 1.5, keep_out: float = 0.35
) -> np.ndarray:
    """Velocity action in [-1, 1] (times the env's max speed, 1 m/s) from the observation alone.

    ``gain * rel_target + target_vel``, plus a push away from every observed neighbour closer than
    ``keep_out`` [m], growing linearly to 2 m/s at contact.
    """
    v = gain * obs[..., fields["rel_target"]] + obs[..., fields["target_vel"]]
    nbr = obs[..., fields["nbr_rel_pos"]].reshape(*obs.shape[:-1], -1, 3)
    if nbr.shape[-2]:
        dist = np.linalg.norm(nbr, axis=-1, keepdims=True)
        push = np.clip((keep_out - dist) / keep_out, 0.0, 1.0) * 2.0
        v -= np.sum(push * nbr / np.maximum(dist, 1e-6), axis=-2)
    return np.clip(v, -1.0, 1.0)


def fly(
    env_name: str, backend: str, num_drones: int, seconds: float, effects: tuple[str, ...], seed: int
) -> dict[str, Any]:
    """Fly one scripted episode; returns metrics and the trajectory."""
    env = make(
        env_name, num_drones=num_drones, backend=backend, effects=effects, seed=seed, episode_len_s=seconds + 1.0
    )
    try:
        obs, _ = env.reset(seed=seed)
        fields = {name: env.obs_field(name) for name in ("rel_target", "target_vel", "nbr_rel_pos")}
        rel = fields["rel_target"]
        steps = int(seconds * env.ctrl_freq)
        traj = np.empty((steps + 1, num_drones, 3))
        targets = np.empty((steps + 1, num_drones, 3))
        traj[0] = env.sim.pos[0]
        targets[0] = traj[0] + obs[0, :, rel]
        errors, total_reward, collisions, crashes = [], np.zeros(num_drones), 0, 0
        start = time.perf_counter()
        for k in tqdm(range(steps), desc=f"{backend:>8s}", unit="step", leave=False):
            obs, reward, _, _, info = env.step(scripted_velocity_policy(obs, fields))
            traj[k + 1] = env.sim.pos[0]
            targets[k + 1] = traj[k + 1] + obs[0, :, rel]
            errors.append(info["pos_error"][0])
            total_reward += reward[0]
            collisions += int(info["collision"].sum())
            crashes += int(info["crash"].sum())
        wall = time.perf_counter() - start
        err = np.asarray(errors)
        settle = err[len(err) // 4 :]
        return {
            "backend": backend,
            "ctrl_freq": env.ctrl_freq,
            "mean_pos_error_m": float(settle.mean()),
            "max_pos_error_m": float(settle.max()),
            "return_per_agent": float(total_reward.mean()),
            "collisions": collisions,
            "crashes": crashes,
            "sim_seconds": seconds,
            "realtime_factor": seconds / wall,
            "trajectory": traj,
            "targets": targets,
        }
    finally:
        env.close()


def run_demo(
    out_dir: str | Path = "runs/demo",
    num_drones: int = 4,
    seconds: float = 10.0,
    effects: tuple[str, ...] = ("ground", "drag", "downwash"),
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo and write ``summary.json`` (and ``trajectories.png``) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_name = "drone-formation"
    results = [fly(env_name, b, num_drones, seconds, effects, seed) for b in ("pybullet", "batched")]
    gap = float(np.max(np.linalg.norm(results[0]["trajectory"] - results[1]["trajectory"], axis=-1)))
    summary = {
        "env": env_name,
        "num_drones": num_drones,
        "effects": list(effects),
        "seed": seed,
        "policy": "scripted velocity commands through the DSL PID",
        "results": [{k: v for k, v in r.items() if k not in ("trajectory", "targets")} for r in results],
        "max_sim_to_sim_gap_m": gap,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot = _plot(results, out / "trajectories.png")
    if plot:
        summary["plot"] = str(plot)
    return summary


def _plot(results: list[dict[str, Any]], path: Path) -> Path | None:
    """Top and side views of the trajectories on both backends; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    styles = {"pybullet": "-", "batched": "--"}
    for r in results:
        traj, tgt = r["trajectory"], r["targets"]
        for i in range(traj.shape[1]):
            label = f"{r['backend']}" if i == 0 else None
            axes[0].plot(traj[:, i, 0], traj[:, i, 1], styles[r["backend"]], color=f"C{i}", label=label)
            axes[1].plot(np.arange(len(traj)) / r["ctrl_freq"], traj[:, i, 2], styles[r["backend"]], color=f"C{i}")
        if r["backend"] == "pybullet":
            for i in range(tgt.shape[1]):
                axes[0].plot(tgt[:, i, 0], tgt[:, i, 1], ":", color="grey", lw=0.8)
    axes[0].set(title="top view (dotted: formation slots)", xlabel="x [m]", ylabel="y [m]", aspect="equal")
    axes[1].set(title="altitude", xlabel="time [s]", ylabel="z [m]")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
