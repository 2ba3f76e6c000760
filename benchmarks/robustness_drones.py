"""Robustness benchmark: vanilla MAPPO against five robust-training methods on the 4-drone hover task.

For every method (``none`` = vanilla MAPPO, ``gaussian``, ``dr``, ``adv-pgd``, ``ernie``, ``ernie-st``) and seed,
trains ``configs/hover4.yaml`` on the batched backend for the same number of env steps, then evaluates the
deterministic policy with the ``standard`` robustness suite on PyBullet (every condition on the same episodes),
and writes the cross-method comparison::

    python benchmarks/robustness_drones.py --out benchmarks/results/robustness_drones.json

Runs go to ``runs/robustness/METHOD-sSEED`` (a finished run is reused, an interrupted one resumed), the
comparison report (markdown, heat map, budget curves) to ``runs/robustness/compare``. ``--workers 2`` runs two
(method, seed) jobs at once, one torch thread each. The goal checked: ERNIE-ST keeps >= 85% of its clean return
averaged over the observation-noise and attack conditions where vanilla keeps <= 70%, with a clean return
within 5% of vanilla's.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sim2real import __version__
from sim2real.config import RobustConfig, load, set_field, validate
from sim2real.eval.policies import load_policy
from sim2real.eval.report import compare
from sim2real.eval.suite import load_suite, run_suite, skip_reason
from sim2real.train import Trainer
from sim2real.train.robust import METHODS

ROOT = Path(__file__).resolve().parent.parent
SWEEP_FAMILIES = ("obs_noise", "attack")


def train_and_evaluate(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse / resume) one run and evaluate it with the suite; returns timings."""
    torch.set_num_threads(1)
    run_dir = run_path(args, method, seed)
    start = time.perf_counter()
    if (run_dir / "summary.json").is_file():
        train_s = json.loads((run_dir / "summary.json").read_text())["wall_clock_s"]
    else:
        if (run_dir / "config.yaml").is_file():
            trainer = Trainer.resume(run_dir, progress=False)
        else:
            data = load(ROOT / "configs" / "hover4.yaml").model_dump(mode="json")
            data.update(name=f"robust-{method}-s{seed}", seed=seed, eval_episodes=0)
            data["train"].update(total_steps=args.steps, time_limit_s=None)
            data["robust"] = robust_section(method, args).model_dump(mode="json")
            trainer = Trainer.create(validate(data), run_dir, progress=False, overwrite=True)
        train_s = trainer.train()["wall_clock_s"]
    config = load(run_dir / "config.yaml")
    if config.train.total_steps != args.steps or config.robust != robust_section(method, args):
        raise SystemExit(f"{run_dir} holds another setting (steps, method); remove it or choose --runs-dir")
    results = run_dir / "eval" / "results.json"
    suite, policy = load_suite(args.suite), load_policy(run_dir)
    if results.is_file():
        old = json.loads(results.read_text())
        was_skipped = {name for conds in old["families"].values() for name, e in conds.items() if "skipped" in e}
        same = (old["suite"], old["episodes"], old["seed"], old["backends"], was_skipped) == (
            suite.to_dict(),
            args.episodes,
            args.eval_seed,
            [args.backend],
            {c.name for c in suite.conditions if skip_reason(policy, c) is not None},
        )
        if not same:
            results.unlink()  # evaluated with other settings (or skipped what it can run now): evaluate again
    if not results.is_file():
        record = run_suite(
            policy,
            suite,
            backends=(args.backend,),
            episodes=args.episodes,
            seed=args.eval_seed,
            progress=False,
        )
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{method} seed {seed}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return {"method": method, "seed": seed, "train_wall_s": train_s}


def robust_section(method: str, args: argparse.Namespace) -> RobustConfig:
    """The ``robust`` config of a run: the method plus the ``--set robust.KEY=VALUE`` overrides (robust methods)."""
    data: dict[str, Any] = {"method": method}
    for item in args.set if method != "none" else []:
        key, _, value = item.partition("=")
        if not key.startswith("robust."):
            raise SystemExit(f"--set {item}: only robust.* fields can be set here")
        set_field(data, key.removeprefix("robust."), yaml.safe_load(value))
    return RobustConfig.model_validate(data)


def run_path(args: argparse.Namespace, method: str, seed: int) -> Path:
    """``RUNS/METHOD[TAG]-sSEED``; vanilla runs carry no tag (``--set robust.*`` does not change them)."""
    return args.runs_dir / f"{method}{'' if method == 'none' else args.tag}-s{seed}"


def sweep_ratio(record: dict[str, Any], backend: str) -> float:
    """Mean robustness ratio over the observation-noise and attack conditions of one run."""
    values = [
        entry[backend]["robustness_ratio"]
        for family in SWEEP_FAMILIES
        for entry in record["families"][family].values()
        if backend in entry
    ]
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=float, default=1.2e6, help="training env steps per run")
    parser.add_argument("--suite", default="standard")
    parser.add_argument("--episodes", type=int, default=8, help="evaluation episodes per condition and run")
    parser.add_argument("--backend", default="pybullet", choices=("pybullet", "batched"))
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="(method, seed) jobs at once")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "robustness")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="robust.* override of the robust methods (e.g. robust.ernie.lam=0.02)",
    )
    parser.add_argument("--tag", default="", help="suffix of the robust runs' directory names, e.g. -lam0.02")
    args = parser.parse_args()

    jobs = [(m, s) for m in args.methods for s in args.seeds]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(train_and_evaluate, *zip(*jobs, strict=True), [args] * len(jobs)))
    wall = time.perf_counter() - start

    records = [json.loads((run_path(args, m, s) / "eval" / "results.json").read_text()) for m, s in jobs]
    table = compare(records, args.runs_dir / f"compare{args.tag}", backend=args.backend)
    methods: dict[str, Any] = {}
    for method in args.methods:
        label = "mappo" if method == "none" else method
        recs = [r for (m, _), r in zip(jobs, records, strict=True) if m == method]
        clean = [r["families"]["clean"]["clean"][args.backend]["mean_return"] for r in recs]
        sweep = [sweep_ratio(r, args.backend) for r in recs]
        methods[label] = {
            "seeds": args.seeds,
            "clean_return": {"mean": float(np.mean(clean)), "std": float(np.std(clean)), "per_seed": clean},
            "noise_and_attack_ratio": {"mean": float(np.mean(sweep)), "std": float(np.std(sweep)), "per_seed": sweep},
            "family_ratio": table["methods"][label]["families"],
            "train_wall_s": [d["train_wall_s"] for d in done if d["method"] == method],
            "team_critic_heldout_r2": [r.get("team_critic", {}).get("heldout_r2") for r in recs],
        }
    goals: dict[str, Any] = {}
    if "mappo" in methods and "ernie-st" in methods:
        van, st = methods["mappo"], methods["ernie-st"]
        goals = {
            "ernie_st_noise_and_attack_ratio_at_least_0.85": st["noise_and_attack_ratio"]["mean"] >= 0.85,
            "vanilla_noise_and_attack_ratio_at_most_0.70": van["noise_and_attack_ratio"]["mean"] <= 0.70,
            "ernie_st_clean_within_5pct_of_vanilla": abs(st["clean_return"]["mean"] / van["clean_return"]["mean"] - 1)
            <= 0.05,
        }
    out = {
        "benchmark": "robustness_drones",
        "task": "configs/hover4.yaml (4 drones, velocity commands)",
        "train_env_steps": int(args.steps),
        "suite": args.suite,
        "eval_backend": args.backend,
        "eval_episodes_per_condition": args.episodes,
        "eval_seed": args.eval_seed,
        "workers": args.workers,
        "overrides": args.set,
        "total_wall_s": wall,
        "sim2real_version": __version__,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "methods": methods,
        "goals": goals,
        "conditions": {label: m["conditions"] for label, m in table["methods"].items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for label, m in methods.items():
        print(
            f"{label:>9s}: clean {m['clean_return']['mean']:.1f} ± {m['clean_return']['std']:.1f}, "
            f"noise+attack ratio {m['noise_and_attack_ratio']['mean']:.3f} ± {m['noise_and_attack_ratio']['std']:.3f}"
        )
    print(json.dumps(goals, indent=2))


if __name__ == "__main__":
    main()
