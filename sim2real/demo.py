"""The end-to-end demo on the built-in defaults: train robustly, evaluate, export, field-test over ROS 2.

Four stages, each the same code as its command (the README's first command runs them all):

1. **train** (``sim2real train``): MAPPO with ERNIE (adversarial regularisation, eq. 4 of the ERNIE paper;
   ``eps`` 0.05, the budget the robustness benchmark recommends for this task) on 4-drone hover, batched backend;
2. **evaluate** (``sim2real eval --suite quick``): one mild condition per perturbation family on the batched
   backend, ``report.md`` with the robustness ratios;
3. **export** (``sim2real export``): the verified deployment bundle (ONNX + contract);
4. **bench** (``sim2real bench ros``): the ROS 2 bench flies the bundle on the PyBullet sim bridge with the
   perturbation node injecting sensor noise between odometry and policy, records an MCAP bag and computes the
   metrics (``summary.json``).

Layout of ``OUT`` (default ``runs/demo``): ``train/`` (the run; its evaluation in ``train/eval/``), ``bundle/``,
``bench/`` and ``summary.json`` (what the demo printed, as JSON). A second run resumes the training from its last
checkpoint (a finished one is reused) and redoes the other stages, replacing their outputs; ``overwrite`` trains
from scratch.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_ENV = {
    "name": "drone-hover",
    "num_drones": 4,
    "num_envs": 256,
    "action_type": "vel",
    "args": {"reward": {"separation": 2.0, "separation_dist": 0.3}},
}
DEMO_ERNIE = {"eps": 0.05, "lam": 0.1}


class DemoError(RuntimeError):
    """The demo cannot start or continue (the message says why and what to do)."""


def demo_config(steps: float, seed: int) -> dict[str, Any]:
    """The demo's training run config (a dict for :func:`sim2real.config.validate`)."""
    return {
        "name": "demo-hover4-ernie",
        "seed": seed,
        "algo": "mappo",
        "env": DEMO_ENV,
        "train": {"total_steps": steps, "rollout_steps": 16, "lr": 3.0e-3, "lr_schedule": "constant"},
        "robust": {"method": "ernie", "ernie": DEMO_ERNIE},
        "checkpoint_every": 20,
        "eval_episodes": 0,
    }


def _trainer(run_dir: Path, steps: float, seed: int, overwrite: bool, progress: bool) -> Any:
    """A new trainer, or the existing run's (resumed) when it was started with the same config."""
    from sim2real.config import load, validate
    from sim2real.train import Trainer

    config = validate(demo_config(steps, seed))
    if overwrite or not (run_dir / "config.yaml").exists():
        return Trainer.create(config, run_dir, progress=progress, overwrite=overwrite)
    if load(run_dir / "config.yaml") != config:
        raise DemoError(
            f"{run_dir} holds a training run with another config (steps or seed differ); "
            "pass --overwrite to train from scratch or choose another --out"
        )
    return Trainer.resume(run_dir, progress=progress)


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    steps: float = 1.2e6,
    episodes: int = 8,
    duration_s: float = 20.0,
    scenario: str = "noise",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the four stages into ``out_dir``; returns the summary (also written to ``OUT/summary.json``).

    Args:
        steps: env steps of training (256 envs x 4 drones; 1.2e6 takes about 3-4 minutes on 2 cores).
        episodes: episodes per condition of the quick robustness suite.
        duration_s: bench flight time (s, wall clock, after the nodes have started).
        scenario: the bench scenario (built-in name or YAML file).
        say: where the stage lines go (the CLI passes ``typer.echo``).
    """
    import torch

    from sim2real.bench.run import load_scenario, run_bench
    from sim2real.eval.policies import load_policy
    from sim2real.eval.report import write_report
    from sim2real.eval.suite import load_suite, run_suite
    from sim2real.export.exporter import export_run

    torch.set_num_threads(1)
    out = Path(out_dir)
    chosen = load_scenario(scenario)  # a bad scenario fails before anything trains
    run_dir, bundle_dir, bench_dir = out / "train", out / "bundle", out / "bench"

    trainer = _trainer(run_dir, steps, seed, overwrite, progress)
    say(f"[1/4] train: MAPPO + ERNIE (eps {DEMO_ERNIE['eps']}) on 4-drone hover, batched backend -> {run_dir}")
    trained = trainer.train()
    if trained["stopped_by"] == "interrupt":
        raise DemoError(f"training interrupted; run the demo again to resume {run_dir} from its checkpoint")
    last = trained["last_episodes"]
    say(
        f"      {trained['env_steps']:,} env steps in {trained['wall_clock_s']:.0f} s "
        f"({trained['env_steps_per_s']:.0f} steps/s); last episodes: return {last.get('episode_return', 0):.1f}, "
        f"position error {last.get('pos_error', float('nan')):.3f} m"
    )

    say(f"[2/4] evaluate: quick robustness suite, {episodes} episodes per condition, batched backend")
    record = run_suite(load_policy(run_dir), load_suite("quick"), episodes=episodes, progress=progress)
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    report = write_report(record, eval_dir)
    clean = record["families"]["clean"]["clean"]["batched"]
    ratios = record["family_ratio"]["batched"]
    say(
        f"      clean return {clean['mean_return']:.1f}, position error {clean['mean_position_error_m']:.3f} m; "
        "robustness ratio " + ", ".join(f"{f} {r:.2f}" for f, r in ratios.items() if f != "clean")
    )

    say(f"[3/4] export -> {bundle_dir}")
    manifest = export_run(run_dir, bundle_dir, overwrite=True)
    parity = manifest["parity"]
    worst = max(v for k, v in parity.items() if k.endswith("max_abs_diff"))
    say(f"      onnxruntime vs torch: largest action difference {worst:.2g} (tolerance {parity['tolerance']:g})")

    say(f"[4/4] ROS 2 bench: scenario {chosen.name} ({chosen.description}), {duration_s:g} s -> {bench_dir}")
    if bench_dir.exists():
        shutil.rmtree(bench_dir)  # the previous demo's bench: its bag cannot be appended to
    bench = run_bench(bundle_dir, chosen, duration_s=duration_s, out_dir=bench_dir, progress=progress)

    summary = {
        "train": {k: trained[k] for k in ("run", "env_steps", "wall_clock_s", "env_steps_per_s", "last_episodes")},
        "evaluation": {
            "suite": "quick",
            "episodes": episodes,
            "clean": clean,
            "family_ratio": ratios,
            "results": str(eval_dir / "results.json"),
        },
        "bundle": {"path": str(bundle_dir), "model_version": manifest["provenance"]["model_version"]},
        "bench": {"scenario": chosen.name, "duration_s": duration_s, "overall": bench["overall"]},
        "report": str(report),
        "bag": bench["bag"],
        "metrics": str(bench_dir / "summary.json"),
    }
    if "plot" in bench:
        summary["plot"] = bench["plot"]
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
