"""Training wall-clock benchmark: does MAPPO learn the drone tasks, how fast, and does it transfer to PyBullet?

Trains the preset ``configs/<preset>.yaml`` on the batched backend under its wall-clock budget, evaluates the
deterministic policy on the batched backend and on PyBullet (same seeds), and writes JSON::

    python benchmarks/train_drones.py --task hover1 --out benchmarks/results/train_hover1.json

``final_metrics`` are the batched-backend evaluation; ``pybullet_metrics`` the PyBullet one;
``pybullet_return_ratio`` = PyBullet mean return / batched mean return (the sim-to-sim gap). Position error is
the mean distance of live drones to their targets over the second half of each episode (the hold phase).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from sim2real import __version__
from sim2real.config import load
from sim2real.eval import evaluate
from sim2real.train import Trainer

ROOT = Path(__file__).resolve().parent.parent
HOVER4_GOALS = {"mean_position_error_m": 0.10, "collisions": 0, "wall_clock_s": 300}
TASKS = {
    # task: (preset, goals, env arguments over the preset's)
    "hover1": ("hover1_rpm", {"mean_position_error_m": 0.05, "wall_clock_s": 60}, {}),
    "hover4": ("hover4", HOVER4_GOALS, {}),
    # the harder variant: targets in the order sampled, so paths cross (docs/drone-envs.md, `assignment`)
    "hover4-random": ("hover4", HOVER4_GOALS, {"assignment": "random"}),
    "nav4": ("nav4", {"goal_coverage": 0.90, "collisions": 0, "wall_clock_s": 900}, {}),
}


def goals_met(goals: dict[str, float], metrics: dict[str, float], wall_clock_s: float) -> dict[str, bool]:
    """Which goals the run met (errors and collisions at most, coverage at least, wall-clock at most)."""
    met = {}
    for key, goal in goals.items():
        value = wall_clock_s if key == "wall_clock_s" else metrics[key]
        met[key] = value >= goal if key == "goal_coverage" else value <= goal
    return met


def learning_curve(run_dir: Path, points: int = 40) -> list[dict[str, float]]:
    """A subsample of the run's metrics: env steps, wall-clock and episode metrics."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keep = ("env_steps", "wall_s", "episode_return", "pos_error", "collisions", "coverage")
    stride = max(1, len(rows) // points)
    return [{k: r[k] for k in keep if k in r} for r in rows[::stride] + rows[-1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None, help="run directory (default runs/bench-<task>)")
    parser.add_argument("--eval-episodes", type=int, default=64, help="batched evaluation episodes")
    parser.add_argument("--pybullet-episodes", type=int, default=16, help="PyBullet evaluation episodes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    preset, goals, env_args = TASKS[args.task]
    config = load(ROOT / "configs" / f"{preset}.yaml")
    config.env.args = {**config.env.args, **env_args}
    config.seed = args.seed
    config.eval_episodes = 0  # evaluated below, on both backends
    run_dir = args.run_dir or ROOT / "runs" / f"bench-{args.task}"
    trainer = Trainer.create(config, run_dir, overwrite=True)
    summary = trainer.train()

    policy = trainer.learner.policy()
    kwargs = config.env.make_kwargs()
    seed = 10_000 + args.seed
    start = time.perf_counter()
    batched = evaluate(policy, config.env.name, kwargs, episodes=args.eval_episodes, seed=seed, progress=True)
    pyb = evaluate(
        policy, config.env.name, kwargs, episodes=args.pybullet_episodes, seed=seed, backend="pybullet", progress=True
    )
    # the same episodes (spawns and targets) as PyBullet's, on the batched backend, for the return ratio
    paired = evaluate(policy, config.env.name, kwargs, episodes=args.pybullet_episodes, seed=seed, max_envs=32)
    eval_s = time.perf_counter() - start
    final = batched.summary()
    result = {
        "benchmark": "train_drones",
        "task": args.task,
        "preset": f"configs/{preset}.yaml",
        "env": config.env.name,
        "num_drones": config.env.num_drones,
        "action_type": config.env.action_type,
        "assignment": config.env.args.get("assignment"),  # hover: which target is whose (None: the task's own)
        "seed": args.seed,
        "wall_clock_s": summary["wall_clock_s"],
        "env_steps": summary["env_steps"],
        "agent_steps": summary["agent_steps"],
        "env_steps_per_s": summary["env_steps_per_s"],
        "stopped_by": summary["stopped_by"],
        "final_metrics": final,
        "pybullet_metrics": pyb.summary(),
        "pybullet_paired_batched_return": paired.mean_return,
        "pybullet_return_ratio": pyb.mean_return / paired.mean_return,
        "goals": goals,
        "goals_met": goals_met(goals, final, summary["wall_clock_s"]),
        "eval_wall_s": eval_s,
        "learning_curve": learning_curve(run_dir),
        "config": config.model_dump(mode="json"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "sim2real_version": __version__,
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("task", "wall_clock_s", "env_steps", "goals_met")}, indent=2))
    print(json.dumps(final, indent=2))
    print("pybullet_return_ratio", round(result["pybullet_return_ratio"], 3))


if __name__ == "__main__":
    main()
