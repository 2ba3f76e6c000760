"""ROS 2 bench loop: observation-to-command latency and achieved rate; bench against simulation tracking error.

    python benchmarks/ros_loop.py --out benchmarks/results/ros_loop.json

Latency (``latency`` section): the bench (sim bridge -> [perturbation node] -> policy node, recorder) at 100 Hz for
4 and 16 drones, without the perturbation hop (``clean`` scenario) and with it (``noise``). The latency of a command
(over the flight, not the bench's hold before it) is its receive time in the recorder's bag minus its header stamp,
which is the stamp of the odometry that produced it (the bridge stamps odometry when it publishes; one host clock);
``stages_ms`` splits it where the odometry reached the recorder before the hop (``odom_raw``) and after it
(``odom``). The achieved rate is the mean over robots of the ``cmd_vel`` rate in the bag, against 100 Hz. Every case
runs twice: at normal scheduling (``latency``) and with every bench process on ``SCHED_FIFO`` (``latency_realtime``,
``--realtime-priority``; the summary says if it was refused). The goal case (4 drones with the hop) runs
``--repeats`` times under each, since one 15 s run's p99 moves by a few ms from run to run on a shared 2-core
machine: ``goal_case_repeats`` lists every run, and the goals use the median run. The nodes warm up before each
burst on ``SCHED_FIFO`` (:mod:`s2r_ros.warmup`): each real-time run of the goal case is followed by one with the
warm-up off (``warmup_lead_s: 0``), its median run in ``latency_realtime_without_warmup`` and every run in
``goal_case_repeats_without_warmup``. Every run also records the host's own wake-up lateness over its flight
(``host_wakeup_ms``: a ``SCHED_FIFO`` 99 probe, :mod:`sim2real.bench.wakeup`), and
``goal_case_host_against_latency`` plots each goal-case run's latency p99 against it (``ros_loop.png`` beside the
JSON) with Spearman's rank correlation per group of runs; ``ros_loop_stages.png`` splits each case's median run by
stage. ``--replot`` redraws both from the JSON at ``--out``. The 4-drone policy is ``tests/data/hover4_bundle``
(trained for 30 Hz; the bench and node run it at 100 Hz here); the 16-drone policy is barely trained (latency does
not depend on training).

Tracking (``tracking`` section): the 4-drone policy at its trained 30 Hz under the ``noise`` scenario on
the bench, against ``sim2real eval``'s evaluation of the same bundle under the same spec on PyBullet (same
seed and targets, same flight length, error over the second half in both). One flight's mean error moves by
about 1.5 mm (5 %) from run to run, so ``--tracking-flights`` flights (seeds ``seed``, ``seed + 1``, ...) are
flown on each side and the goal compares the means; ``flights`` lists each pair.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim2real import __version__
from sim2real.bench.run import load_scenario, run_bench
from sim2real.eval import evaluate
from sim2real.eval.policies import load_policy
from sim2real.eval.report import new_figure

ROOT = Path(__file__).resolve().parent.parent
BUNDLE4 = ROOT / "tests" / "data" / "hover4_bundle"
GOAL_CASE = "4_drones_with_hop"


def bundle16(work: Path) -> Path:
    """A barely trained 16-drone hover bundle (velocity commands), made once in ``work``."""
    from sim2real.config import validate
    from sim2real.export.exporter import export_run
    from sim2real.train import Trainer

    bundle = work / "bundle16"
    if (bundle / "manifest.json").is_file():
        return bundle
    config = validate(
        {
            "name": "ros-loop-16",
            "env": {"num_drones": 16, "num_envs": 16, "action_type": "vel"},
            "train": {"total_steps": 16 * 16 * 8 * 2, "rollout_steps": 8},
            "policy": {"hidden": [64, 64]},
            "eval_episodes": 0,
        }
    )
    Trainer.create(config, work / "run16", progress=False, overwrite=True).train()
    export_run(work / "run16", bundle, overwrite=True)
    return bundle


def latency_entry(summary: dict[str, Any], rate_hz: float) -> dict[str, Any]:
    """Latency percentiles and achieved command rate of one bench summary."""
    rates = [t["rate_hz"] for name, t in summary["topics"].items() if name.endswith("/cmd_vel")]
    lat = summary["overall"]["latency_ms"]
    return {
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "max_ms": lat["max_ms"],
        "commands": lat["count"],
        "stages_ms": {
            name: {"p50": stage["p50_ms"], "p99": stage["p99_ms"]}
            for name, stage in (summary["overall"]["latency_stages_ms"] or {}).items()
        },
        "command_rate_hz": float(np.mean(rates)),
        "rate_fraction": float(np.mean(rates)) / rate_hz,
        "odom_drops": summary["overall"]["drops"],
        "cpu_percent": {name: p["cpu_percent"] for name, p in summary["processes"].items()},
        "realtime_refused": summary["scheduling"]["refused"],
        "host_wakeup_ms": _host_wakeups(summary),
    }


def _host_wakeups(summary: dict[str, Any]) -> dict[str, Any] | None:
    """p50, p99 and max of the run's host wake-up lateness [ms] (:mod:`sim2real.bench.wakeup`), with the probe's
    priority; None when the probe wrote nothing."""
    host = summary.get("host")
    if not host:
        return None
    late = host["wakeup_lateness_ms"]
    return {"p50": late["p50_ms"], "p99": late["p99_ms"], "max": late["max_ms"], "probe_priority": host["priority"]}


def figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure of ``width`` x ``height`` inches and its one axes (:func:`sim2real.eval.report.new_figure`)."""
    made = new_figure(width, height)
    if made is None:
        raise SystemExit("the plots need matplotlib: pip install -c constraints.txt -e '.[plot]'")
    return made


def rank_correlation(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (no ties expected in measured times)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def host_against_latency(groups: dict[str, list[dict[str, Any]]], path: Path) -> dict[str, Any]:
    """Each goal-case run's latency p99 against its host wake-up p99, as a scatter plot at ``path`` (with
    matplotlib) and Spearman's rank correlation per group of runs (``groups``: label -> runs)."""
    fig, (ax,) = figure(6.4, 4.4)
    correlation = {}
    for label, entries in groups.items():
        runs = [e for e in entries if e["host_wakeup_ms"]]
        host = [e["host_wakeup_ms"]["p99"] for e in runs]
        p99 = [e["p99_ms"] for e in runs]
        ax.scatter(host, p99, label=label)
        correlation[label] = rank_correlation(host, p99) if len(runs) > 2 else None
    ax.axhline(3.0, color="grey", linestyle="--", linewidth=1, label="goal: p99 3 ms")
    ax.set_xscale("log")
    ax.set_xlabel("host wake-up lateness p99 [ms] (SCHED_FIFO 99 probe, every 5 ms)")
    ax.set_ylabel("observation-to-command latency p99 [ms]")
    ax.set_title("4 drones with the perturbation hop, 100 Hz: each run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return {"plot": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "spearman_rho": correlation}


STAGE_COLOURS = {"stamp": "tab:blue", "odom_raw": "tab:orange", "odom": "tab:green"}
"""Bar colour of each stage by where it starts: the sim bridge, the perturbation hop, the policy node."""
STAGE_LABELS = {"stamp": "sim bridge + transport", "odom_raw": "perturbation hop", "odom": "policy node"}


def stage_plot(schedulings: dict[str, dict[str, dict[str, Any]]], path: Path) -> str:
    """Each case's latency p50 split by stage (``stages_ms``) as stacked bars, its p50 / p99 written beside, at
    ``path`` (with matplotlib); ``schedulings``: label -> case -> :func:`latency_entry`. Returns the plot's path."""
    from matplotlib.patches import Patch

    bars = [
        (f"{case.replace('_', ' ')}, {label}", entry)
        for label, cases in schedulings.items()
        for case, entry in cases.items()
    ]
    fig, (ax,) = figure(8.0, 0.45 * len(bars) + 1.6)
    for row, (_, entry) in enumerate(bars):
        left = 0.0
        for name, stage in entry["stages_ms"].items():
            ax.barh(row, stage["p50"], left=left, color=STAGE_COLOURS.get(name.split(" -> ")[0], "tab:grey"))
            left += stage["p50"]
        ax.text(left + 0.05, row, f"{entry['p50_ms']:.2f} / {entry['p99_ms']:.2f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [name for name, _ in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("each stage's p50, stacked [ms]; beside: the whole latency's p50 / p99")
    ax.set_title("100 Hz bench: where the latency goes (median run per case)")
    ax.set_xlim(0, max(entry["p50_ms"] for _, entry in bars) * 1.45)
    handles = [Patch(color=STAGE_COLOURS[start], label=label) for start, label in STAGE_LABELS.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def plots(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """Draw both plots of a result beside ``out`` (``ros_loop.png``, ``ros_loop_stages.png``); the result's
    ``goal_case_host_against_latency`` and ``latency_stages_plot``."""
    repeats = result["goal_case_repeats"]
    host = host_against_latency(
        {
            "normal": repeats["normal"],
            "SCHED_FIFO": repeats["realtime"],
            "SCHED_FIFO, no warm-up": result["goal_case_repeats_without_warmup"],
        },
        out.with_suffix(".png"),
    )
    schedulings = {"normal": result["latency"], "SCHED_FIFO": result["latency_realtime"]}
    stages = stage_plot(schedulings, out.with_name(f"{out.stem}_stages.png"))
    return {"goal_case_host_against_latency": host, "latency_stages_plot": stages}


def median_run(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median p99 (the upper one of an even count)."""
    return sorted(entries, key=lambda e: e["p99_ms"])[len(entries) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=15.0, help="flight time per latency run [s]")
    parser.add_argument("--tracking-duration", type=float, default=20.0, help="flight time per tracking flight [s]")
    parser.add_argument(
        "--tracking-flights", type=int, default=3, help="tracking flights (seeds) averaged on each side"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "ros_loop")
    parser.add_argument("--realtime-priority", type=int, default=50, help="SCHED_FIFO priority of the real-time runs")
    parser.add_argument("--repeats", type=int, default=5, help="runs of the goal case under each scheduling")
    parser.add_argument("--replot", action="store_true", help="only redraw the plots of the result at --out")
    args = parser.parse_args()
    if args.replot:
        if not args.out.is_file():
            parser.error(f"--replot: {args.out} does not exist; run the benchmark first")
        result = json.loads(args.out.read_text())
        args.out.write_text(json.dumps({**result, **plots(result, args.out)}, indent=2) + "\n")
        return
    if args.repeats < 1 or args.tracking_flights < 1:
        parser.error("--repeats and --tracking-flights must be at least 1")
    args.work.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rate = 100.0
    sections: dict[str, dict[str, Any]] = {"latency": {}, "latency_realtime": {}}
    repeats: dict[str, list[dict[str, Any]]] = {"normal": [], "realtime": []}
    cold_repeats: list[dict[str, Any]] = []  # the goal case on SCHED_FIFO with the warm-up off
    for drones, bundle in ((4, BUNDLE4), (16, bundle16(args.work))):
        for scenario, hop in (("clean", "without_hop"), ("noise", "with_hop")):
            case = f"{drones}_drones_{hop}"
            runs = args.repeats if case == GOAL_CASE else 1
            for section, scheduling, priority in (
                ("latency", "normal", 0),
                ("latency_realtime", "realtime", args.realtime_priority),
            ):
                entries, cold = [], []  # warm-up at the nodes' default; off
                variants = [(None, entries), (0.0, cold)] if case == GOAL_CASE and priority else [(None, entries)]
                for run in range(runs):
                    for warmup_lead_s, runs_of in variants:
                        name = f"{stamp}-{drones}-{scenario}-{scheduling}-{run}" + ("-cold" if runs_of is cold else "")
                        summary = run_bench(
                            bundle,
                            load_scenario(scenario),
                            duration_s=args.duration,
                            out_dir=args.work / name,
                            rate_hz=rate,
                            realtime_priority=priority,
                            warmup_lead_s=warmup_lead_s,
                            progress=False,
                        )
                        runs_of.append(latency_entry(summary, rate))
                        print(f"{name}: {runs_of[-1]}", flush=True)
                if case == GOAL_CASE:
                    repeats[scheduling] = entries
                if cold:
                    cold_repeats = cold
                    sections[f"{section}_without_warmup"] = {case: median_run(cold)}
                sections[section][case] = median_run(entries)

    noise = load_scenario("noise")
    policy = load_policy(BUNDLE4)
    flights = []
    for flight in range(args.tracking_flights):  # flight k: seed + k on both sides (targets, spawn, noise draws)
        scenario = dataclasses.replace(noise, seed=noise.seed + flight)
        bench = run_bench(
            BUNDLE4,
            scenario,
            duration_s=args.tracking_duration,
            out_dir=args.work / f"{stamp}-tracking-{flight}",
            progress=False,
        )
        sim = evaluate(
            policy.act,
            policy.env_id,
            {**policy.env_kwargs, "episode_len_s": args.tracking_duration},
            episodes=1,
            backend="pybullet",
            seed=scenario.seed,
            perturbations=scenario.perturbations,
        ).summary()
        flights.append(
            {
                "seed": scenario.seed,
                "bench_mean_error_m": bench["overall"]["tracking_error_mean_m"],
                "sim_mean_error_m": sim["mean_position_error_m"],
                "bench_latency_p50_ms": bench["overall"]["latency_ms"]["p50_ms"],
            }
        )
        print(f"tracking flight {flight}: {flights[-1]}", flush=True)
    bench_error = float(np.mean([f["bench_mean_error_m"] for f in flights]))
    sim_error = float(np.mean([f["sim_mean_error_m"] for f in flights]))
    tracking = {
        "scenario": "noise",
        "spec": noise.perturbations,
        "flights": flights,
        "bench_mean_error_m": bench_error,
        "sim_mean_error_m": sim_error,
        "relative_difference": abs(bench_error - sim_error) / sim_error,
    }
    print(f"tracking: {tracking}", flush=True)
    normal, realtime = sections["latency"][GOAL_CASE], sections["latency_realtime"][GOAL_CASE]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rt_ran = not any(entry["realtime_refused"] for entry in repeats["realtime"])  # else no real-time goal (None)
    result = {
        "benchmark": "ros_loop",
        "rate_hz": rate,
        "duration_s": args.duration,
        "realtime_priority": args.realtime_priority,
        **sections,
        "goal_case_repeats": repeats,
        "goal_case_repeats_without_warmup": cold_repeats,
        "tracking": tracking,
        "goals": {
            "p99_at_most_3ms_4_drones_with_hop": normal["p99_ms"] <= 3.0,
            "p99_at_most_3ms_4_drones_with_hop_realtime": realtime["p99_ms"] <= 3.0 if rt_ran else None,
            "rate_at_least_99pct_4_drones_with_hop": normal["rate_fraction"] >= 0.99,
            "rate_at_least_99pct_4_drones_with_hop_realtime": realtime["rate_fraction"] >= 0.99 if rt_ran else None,
            "bench_and_sim_tracking_within_10pct": tracking["relative_difference"] <= 0.10,
        },
        "sim2real_version": __version__,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    result |= plots(result, args.out)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["goals"], indent=2))


if __name__ == "__main__":
    main()
