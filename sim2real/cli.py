"""The ``sim2real`` command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from sim2real import __version__


def _commands(help_text: str, **kwargs: Any) -> typer.Typer:
    """A command group; its help texts print units such as ``[s]`` and ``[m]`` as written (no rich markup)."""
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None, **kwargs)


app = _commands("sim2real: robust multi-agent robot policies from simulation to the robot.", add_completion=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sim2real {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """sim2real command line."""


@app.command("envs")
def envs_command(
    num_drones: int = typer.Option(4, min=1, help="Swarm size used to show the spaces."),
    action_type: str = typer.Option("vel", help="Action type used to show the spaces: vel or rpm."),
) -> None:
    """List the registered environments with agent count, observation and action spaces."""
    from sim2real.envs import env_names, make, spec

    for name in env_names():
        try:
            env = make(name, num_drones=num_drones, action_type=action_type)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
        try:
            fields = ", ".join(f"{f.name}[{f.size}]" for f in env.obs_layout if f.size)
            typer.echo(f"{name}: {spec(name).description}")
            typer.echo(f"  agents: {env.num_agents}")
            typer.echo(f"  observation: Box({env.obs_dim},) float32 = {fields}")
            typer.echo(f"  action ({env.action_type}): Box(-1.0, 1.0, ({env.act_dim},), float32)")
        finally:
            env.close()


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Output directory: train/, bundle/, bench/, summary.json."),
    steps: float = typer.Option(1.2e6, min=1e4, help="Env steps of ERNIE training (1.2e6: about 3-4 minutes)."),
    episodes: int = typer.Option(8, min=1, help="Episodes per condition of the quick robustness suite."),
    duration: float = typer.Option(20.0, min=2.0, max=3600.0, help="ROS 2 bench flight time [s]."),
    scenario: str = typer.Option("noise", help="Bench scenario: clean, noise, dropout, delay, malicious or YAML."),
    seed: int = typer.Option(0, min=0, help="Training seed."),
    overwrite: bool = typer.Option(False, help="Train from scratch even if OUT/train holds the demo's run."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The end-to-end demo: train 4-drone hover with ERNIE, evaluate, export, fly it on the ROS 2 bench."""
    from sim2real.bench.launcher import ProcessDiedError
    from sim2real.bench.run import ScenarioError
    from sim2real.demo import DemoError, run_demo
    from sim2real.export.exporter import ExportError
    from sim2real.train import RunError

    try:
        summary = run_demo(
            out,
            steps=steps,
            episodes=episodes,
            duration_s=duration,
            scenario=scenario,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
            say=typer.echo,
        )
    except ScenarioError as err:
        raise typer.BadParameter(str(err), param_hint="--scenario") from err
    except (DemoError, RunError, ExportError) as err:
        typer.echo(f"demo stopped: {err}", err=True)
        raise typer.Exit(2) from err
    except ProcessDiedError as err:
        typer.echo(f"demo stopped: the bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    bench = json.loads(Path(summary["metrics"]).read_text())
    typer.echo(_bench_lines(bench))
    report, bag, metrics, plot = (summary.get(k) for k in ("report", "bag", "metrics", "plot"))
    typer.echo(_paths(report=report, bag=bag, metrics=metrics, plot=plot, summary=out / "summary.json"))


@app.command("train")
def train_command(
    config: Path = typer.Argument(None, help="A YAML run config (docs/training.md); options below override it."),
    env: str = typer.Option(None, help="Env name, e.g. drone-hover (config: env.name)."),
    num_drones: int = typer.Option(None, min=1, help="Agents per env (env.num_drones)."),
    num_envs: int = typer.Option(None, min=1, help="Envs stepped together (env.num_envs)."),
    action_type: str = typer.Option(None, help="vel or rpm (env.action_type)."),
    algo: str = typer.Option(None, help="mappo (centralised critic) or ippo (algo)."),
    robust: str = typer.Option(
        None, help="Robust-training method: none, ernie, ernie-st, adv-pgd, gaussian or dr (robust.method)."
    ),
    steps: float = typer.Option(None, help="Env steps to train, e.g. 2e6 (train.total_steps)."),
    time_limit: float = typer.Option(None, help="Stop after this many seconds of training (train.time_limit_s)."),
    seed: int = typer.Option(None, min=0, help="Random seed (seed)."),
    set_: list[str] = typer.Option(None, "--set", help="Any field as dotted.key=value, e.g. --set train.lr=3e-4."),
    out: Path = typer.Option(None, help="Run directory (default runs/<name or env-algo-seed>)."),
    resume: Path = typer.Option(None, help="Continue the run in this directory from its latest checkpoint."),
    overwrite: bool = typer.Option(False, help="Start over in --out even if it holds a run."),
    progress: bool = typer.Option(True, help="Show the progress bar."),
) -> None:
    """Train a policy (MAPPO/IPPO on the batched backend); checkpoints and resume included."""
    import yaml

    from sim2real.config import ConfigError, load, set_field, validate
    from sim2real.train import RunError, Trainer

    try:
        if resume is not None:
            given = {
                "config": config,
                "--env": env,
                "--num-drones": num_drones,
                "--num-envs": num_envs,
                "--action-type": action_type,
                "--algo": algo,
                "--robust": robust,
                "--seed": seed,
                "--set": set_,
                "--out": out,
            }
            fixed = [name for name, value in given.items() if value is not None]
            if fixed:
                raise typer.BadParameter(
                    f"{', '.join(fixed)} cannot change a resumed run; only --steps and --time-limit can",
                    param_hint="--resume",
                )
            pairs = (("train.total_steps", steps), ("train.time_limit_s", time_limit))
            overrides = {k: v for k, v in pairs if v is not None}
            trainer = Trainer.resume(resume, overrides=overrides, progress=progress)
            typer.echo(f"resuming {resume} at update {trainer.update_idx} ({trainer.env_steps} env steps)")
        else:
            data = load(config).model_dump(mode="json") if config is not None else {}
            options = {
                "env.name": env,
                "env.num_drones": num_drones,
                "env.num_envs": num_envs,
                "env.action_type": action_type,
                "algo": algo,
                "robust.method": robust,
                "train.total_steps": steps,
                "train.time_limit_s": time_limit,
                "seed": seed,
            }
            for key, value in options.items():
                if value is not None:
                    set_field(data, key, value)
            for item in set_ or []:
                key, sep, value = item.partition("=")
                if not sep or not key:
                    raise typer.BadParameter(f"{item!r} is not dotted.key=value", param_hint="--set")
                set_field(data, key.strip(), yaml.safe_load(value))
            run = validate(data)
            run_dir = out or Path("runs") / (run.name or f"{run.env.name}-{run.algo}-s{run.seed}")
            trainer = Trainer.create(run, run_dir, progress=progress, overwrite=overwrite)
            method = "" if run.robust.method == "none" else f" with {run.robust.method}"
            typer.echo(
                f"training {run.algo}{method} on {run.env.name} ({run.env.num_drones} drones, "
                f"{run.env.num_envs} envs) -> {run_dir}"
            )
    except (ConfigError, RunError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    summary = trainer.train()
    typer.echo(
        f"{summary['stopped_by']}: {summary['env_steps']} env steps in {summary['wall_clock_s']:.1f} s "
        f"({summary['env_steps_per_s']:.0f} steps/s); checkpoints in {trainer.run_dir / 'checkpoints'}"
    )
    if "eval" in summary:
        ev = summary["eval"]
        line = (
            f"eval ({ev['episodes']} episodes): return {ev['mean_return']:.1f}, "
            f"position error {ev['mean_position_error_m']:.3f} m, collisions {ev['collisions']}"
        )
        if "goal_coverage" in ev:
            line += f", goal coverage {ev['goal_coverage']:.2f}"
        typer.echo(line)
    if summary["stopped_by"] == "interrupt":
        typer.echo(f"continue with: sim2real train --resume {trainer.run_dir}")


@app.command("eval")
def eval_command(
    policies: list[Path] = typer.Argument(
        ..., help="A run directory (torch), a bundle or a policy.onnx; with --compare: evaluated runs to compare."
    ),
    suite: str = typer.Option(
        None, help="Robustness suite: standard, quick, or a suite YAML file (docs/robustness.md)."
    ),
    perturb: str = typer.Option(None, help="Instead of a suite: clean and this one spec (string form or YAML file)."),
    episodes: int = typer.Option(32, min=1, help="Episodes per condition and backend."),
    backend: str = typer.Option(
        None,
        help="Simulator: batched (default), pybullet, or both (the sim-to-sim gap); with --compare: the one shown.",
    ),
    seed: int = typer.Option(10_000, min=0, help="Env seed of the first episode round (same seed, same episodes)."),
    out: Path = typer.Option(None, help="Output directory (default RUN/eval, runs/eval/VERSION or runs/compare)."),
    compare: bool = typer.Option(False, help="Cross table of the given runs' eval/results.json (seeds grouped)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Evaluate a policy under a robustness suite (results.json + report.md), or --compare evaluated runs."""

    import torch

    from sim2real.eval.policies import PolicyLoadError, load_policy
    from sim2real.eval.report import compare as compare_records
    from sim2real.eval.report import write_report
    from sim2real.eval.suite import Condition, Suite, SuiteError, family_of, load_suite, run_suite, skip_reason

    torch.set_num_threads(1)
    if out is not None and out.suffix == ".json":
        raise typer.BadParameter(
            f"--out is a directory (results.json and the report go into it), got {out}", param_hint="--out"
        )
    if backend not in (None, "batched", "pybullet", "both"):
        raise typer.BadParameter(
            f"unknown backend {backend!r}: choose batched, pybullet or both", param_hint="--backend"
        )
    if compare:
        if suite is not None or perturb is not None:
            raise typer.BadParameter(
                "--compare reads existing results; run the suite on each run first", param_hint="--compare"
            )
        if backend == "both":
            raise typer.BadParameter("--compare shows one backend: choose batched or pybullet", param_hint="--backend")
        records = []
        for path in policies:
            file = path / "eval" / "results.json" if path.is_dir() else path
            if not file.is_file():
                raise typer.BadParameter(
                    f"{path} has no {file.name}: run `sim2real eval {path} --suite standard` first",
                    param_hint="POLICIES",
                )
            try:
                records.append(json.loads(file.read_text()))
            except ValueError as err:
                raise typer.BadParameter(f"{file} is not a results JSON: {err}", param_hint="POLICIES") from err
        out = out or Path("runs") / "compare"
        try:
            result = compare_records(records, out, backend=backend)
        except KeyError as err:
            typer.echo(f"a compared file is not a `sim2real eval` results.json (it has no {err})", err=True)
            raise typer.Exit(2) from err
        except ValueError as err:
            typer.echo(str(err), err=True)
            raise typer.Exit(2) from err
        for label, m in result["methods"].items():
            fams = ", ".join(f"{f} {v['ratio_mean']:.2f}" for f, v in m["families"].items() if f != "clean")
            clean = m["conditions"]["clean"]
            typer.echo(f"{label} ({clean['seeds']} seeds): clean return {clean['return_mean']:.1f}; ratio {fams}")
        typer.echo(f"wrote {out / 'compare.md'} and {out / 'compare.json'}")
        return
    if len(policies) != 1:
        raise typer.BadParameter(
            "evaluate one policy at a time, or pass --compare to compare runs", param_hint="POLICIES"
        )
    if suite is not None and perturb is not None:
        raise typer.BadParameter("give either --suite or --perturb, not both", param_hint="--perturb")
    policy = policies[0]
    try:
        loaded = load_policy(policy)
        if suite is not None:
            chosen = load_suite(suite)
        else:
            conditions = [Condition("clean", "clean")]
            if perturb is not None:
                spec = _perturbation_spec(perturb)
                conditions.append(Condition("perturbed", family_of(spec), spec))
            chosen = Suite("custom" if perturb else "clean", conditions)
            reason = skip_reason(loaded, conditions[-1])
            if reason is not None:
                raise PolicyLoadError(reason)
    except (PolicyLoadError, SuiteError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    backends = ("batched", "pybullet") if backend == "both" else (backend or "batched",)
    try:
        record = run_suite(loaded, chosen, backends=backends, episodes=episodes, seed=seed, progress=progress)
    except SuiteError as err:  # a condition the policy's env rejects (checked before anything runs)
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    if out is None:
        out = policy / "eval" if loaded.kind == "torch" else Path("runs") / "eval" / loaded.version
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    report = write_report(record, out)
    typer.echo(
        f"{loaded.kind} policy {policy} on {loaded.env_id}: suite {chosen.name}, {episodes} episodes, seed {seed}"
    )
    header = f"{'family':>10s} " + " ".join(f"{'ratio ' + b:>15s}" for b in backends)
    typer.echo(header)
    for family in record["families"]:
        cells = [record["family_ratio"][b].get(family) for b in backends]
        if any(c is not None for c in cells):
            typer.echo(f"{family:>10s} " + " ".join(f"{c:15.3f}" if c is not None else f"{'-':>15s}" for c in cells))
    clean = record["families"]["clean"]["clean"]
    typer.echo("clean return " + ", ".join(f"{b} {clean[b]['mean_return']:.2f}" for b in backends))
    skipped = [n for conds in record["families"].values() for n, e in conds.items() if "skipped" in e]
    if skipped:
        typer.echo(f"skipped {len(skipped)} condition(s) (reasons in the report): {', '.join(skipped)}")
    typer.echo(f"results: {out / 'results.json'}; report: {report}")


def _perturbation_spec(text: str) -> dict:
    """A --perturb value (string form or YAML file) as a validated spec dict; PolicyLoadError when invalid."""
    from sim2real.eval.policies import PolicyLoadError
    from sim2real.perturb import SpecError, parse_spec

    try:
        spec = parse_spec(text).to_dict()
    except SpecError as err:
        raise PolicyLoadError(f"--perturb: {err}") from err
    if not spec["perturbations"]:
        raise PolicyLoadError("--perturb: the spec has no perturbations")
    return spec


@app.command("export")
def export_command(
    run: Path = typer.Argument(..., help="The run directory to export (its latest checkpoint)."),
    out: Path = typer.Option(None, help="Bundle directory to write (default RUN/export)."),
    checkpoint: Path = typer.Option(None, help="Export this checkpoint file instead of the latest."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle in --out."),
) -> None:
    """Export a run's deterministic actor to a verified deployment bundle (policy.onnx, manifest, node params)."""
    import torch

    from sim2real.export.contract import describe_contract
    from sim2real.export.exporter import ExportError, export_run

    torch.set_num_threads(1)
    out = out or run / "export"
    try:
        manifest = export_run(run, out, checkpoint=checkpoint, overwrite=overwrite)
    except ExportError as err:
        typer.echo(f"export failed: {err}", err=True)
        raise typer.Exit(2) from err
    parity = manifest["parity"]
    typer.echo(f"exported {run} ({manifest['provenance']['checkpoint']}) -> {out}")
    checks = ", ".join(
        f"{k.replace('_', ' ')} {v:.2g}"
        for k, v in parity.items()
        if k.endswith(("max_abs_diff", "mismatched_actions"))
    )
    typer.echo(f"parity torch vs onnxruntime (tolerance {parity['tolerance']:g}): {checks}")
    typer.echo(describe_contract(manifest["contract"], str(manifest["provenance"]["model_version"])))


bundle_app = _commands("Deployment bundles: verify integrity and contract.")
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("verify")
def bundle_verify_command(
    bundle: Path = typer.Argument(..., help="The bundle directory (what `sim2real export` wrote)."),
    env: str = typer.Option(None, help="The robot's env id; must equal the bundle's."),
    num_drones: int = typer.Option(None, min=1, help="The robot swarm's size; must match the bundle's contract."),
    action_type: str = typer.Option(None, help="The robots' command interface, vel or rpm; must match."),
) -> None:
    """Check a bundle's file hashes and contract (and its fit to a declared robot configuration); print the contract."""
    from sim2real.envs import make
    from sim2real.export import BundleError, ContractError, env_contract, verify_bundle
    from sim2real.export.contract import check_contract, describe_contract

    try:
        manifest = verify_bundle(bundle)
        contract = manifest["contract"]
        if env is not None or num_drones is not None or action_type is not None:
            kwargs = dict(contract["env_params"])
            kwargs |= {k: v for k, v in (("num_drones", num_drones), ("action_type", action_type)) if v is not None}
            env_id = env or contract["env_id"]
            try:
                robot = make(env_id, num_envs=1, **kwargs)
            except (ValueError, TypeError) as err:
                raise typer.BadParameter(f"cannot build {env_id} with {kwargs}: {err}") from err
            try:
                check_contract(contract, env_contract(robot, env_id, kwargs), source=f"bundle {bundle}")
            except ContractError as err:
                raise BundleError(str(err)) from err
            finally:
                robot.close()
    except BundleError as err:
        typer.echo(f"REJECTED {bundle}: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"OK {bundle}: {len(manifest['files'])} files match the manifest; contract consistent")
    prov = manifest["provenance"]
    typer.echo(
        f"run {prov['run_id']}, {prov['checkpoint']}, config {prov['config_hash'][:19]}..., "
        f"created {manifest['created']}"
    )
    typer.echo(describe_contract(contract, str(prov["model_version"])))


bench_app = _commands("The ROS 2 bench: fly an exported policy on the simulated swarm.")
app.add_typer(bench_app, name="bench")


@bench_app.command("ros")
def bench_ros_command(
    bundle: Path = typer.Option(..., help="The deployment bundle to fly (what `sim2real export` wrote)."),
    scenario: str = typer.Option("clean", help="Built-in scenario (clean, noise, dropout, delay, malicious) or YAML."),
    duration: float = typer.Option(20.0, min=2.0, max=3600.0, help="Flight time [s] after start-up."),
    out: Path = typer.Option(..., help="Run directory to create: bag/, logs/, summary.json."),
    realtime_priority: int = typer.Option(
        0,
        min=0,
        max=99,
        help="SCHED_FIFO priority (1-99) for every bench process once started, as on a robot; 0: normal "
        "scheduling. Needs root or CAP_SYS_NICE; when refused the run goes on at normal priority and says so.",
    ),
    warmup_lead_ms: float | None = typer.Option(
        None,
        min=0.0,
        max=1000.0,
        help="How long [ms] before each burst the perturbation and policy nodes re-run their last burst's work on "
        "a copy, so their code is warm (default: the nodes' 2.5 ms; 0: off). They warm up only on SCHED_FIFO.",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run the ROS 2 bench: sim bridge, perturbation node, policy node and recorder in a private domain."""
    from sim2real.bench.launcher import ProcessDiedError
    from sim2real.bench.run import ScenarioError, load_scenario, run_bench
    from sim2real.export import BundleError

    try:
        chosen = load_scenario(scenario)
        summary = run_bench(
            bundle,
            chosen,
            duration_s=duration,
            out_dir=out,
            realtime_priority=realtime_priority,
            warmup_lead_s=None if warmup_lead_ms is None else warmup_lead_ms / 1e3,
            progress=progress,
        )
    except ScenarioError as err:
        raise typer.BadParameter(str(err), param_hint="--scenario") from err
    except (BundleError, FileExistsError) as err:
        typer.echo(f"bench not started: {err}", err=True)
        raise typer.Exit(2) from err
    except ProcessDiedError as err:
        typer.echo(f"bench failed: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(_bench_lines(summary))
    typer.echo(_paths(bag=summary["bag"], metrics=out / "summary.json", plot=summary.get("plot")))


def _bench_lines(summary: dict) -> str:
    """The human summary of a bench run: its scenario, the metrics and, when asked for, its scheduling."""
    lines = [f"scenario {summary['scenario']['name']}: {summary['scenario']['description'] or 'no perturbation'}"]
    lines += _metrics_lines(summary)
    scheduling = summary.get("scheduling", {})
    if scheduling.get("realtime_priority"):
        refused = scheduling["refused"]
        lines.append(
            f"  scheduling: SCHED_FIFO priority {scheduling['realtime_priority']}"
            + (f"; refused (normal priority) for {', '.join(refused)}" if refused else "")
        )
    host = summary.get("host")
    if host and host["wakeup_lateness_ms"]["count"]:
        late = host["wakeup_lateness_ms"]
        probe = f"SCHED_FIFO {host['priority']}" if host["priority"] else "normal priority"
        lines.append(
            f"  host wake-up lateness p50 / p99 / max: {late['p50_ms']:.2f} / {late['p99_ms']:.2f} / "
            f"{late['max_ms']:.2f} ms (a {probe} probe every {host['period_ms']:g} ms; the machine's own stalls)"
        )
    return "\n".join(lines)


def _metrics_lines(summary: dict, tracking_over: str = "hold window") -> list[str]:
    """Latency, tracking (over ``tracking_over``), failsafe and drop lines of a metrics summary
    (:mod:`sim2real.bench.metrics`)."""
    o = summary["overall"]
    lat = o["latency_ms"]
    if "simulated_s" in summary:  # lock step: simulated-time stamps give no wall-clock latency
        latency = f"n/a in lock step ({summary['simulated_s']:.1f} s simulated)"
    elif lat["count"]:
        latency = f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f} ms ({lat['count']} commands)"
    else:
        latency = "no commands"
    tracking = o["tracking_error_mean_m"]
    stages = o.get("latency_stages_ms") or {}
    by_stage = [f"{name} {s['p50_ms']:.2f} / {s['p99_ms']:.2f}" for name, s in stages.items() if s["count"]]
    return [
        f"  observation-to-command latency p50 / p99: {latency}",
        *([f"  by stage p50 / p99: {', '.join(by_stage)} ms"] if by_stage else []),
        f"  tracking error ({tracking_over}): {'n/a' if tracking is None else f'{tracking:.3f} m'}; "
        f"min separation {o.get('min_separation_m') or float('nan'):.3f} m, collisions {o.get('collisions')}",
        f"  failsafe entries {o['failsafe_entries']}, stale reports {o['stale_reports']}, drops {o['drops']}, "
        f"perturbation hits {summary['perturbation_events']['hits']}",
    ]


@bench_app.command("metrics")
def bench_metrics_command(
    bag: Path = typer.Argument(..., help="A rosbag2 directory (the bench recorder's, or one recorded on robots)."),
    out: Path = typer.Option(..., help="JSON file to write the metrics to."),
    rate: list[str] = typer.Option(
        [], help="Nominal rate PATTERN=HZ for drop counting, e.g. '/*/odom=100' (repeatable; first match wins)."
    ),
    target: list[str] = typer.Option(
        [], help="Target ROBOT=X,Y,Z [m, world frame] for the tracking error, e.g. 'cf1=0,0,1' (repeatable)."
    ),
    truth: str = typer.Option("truth", help="Per-robot ground-truth topic (/ROBOT/TRUTH: Odometry or PoseStamped)."),
    collision_distance: float = typer.Option(None, min=0.0, help="Robots closer than this [m] collide."),
    stages: str = typer.Option(
        "",
        help="Per-robot topics a state passes through before the command, in order, for the latency by stage, "
        "e.g. 'odom_raw,odom' (the bench with its perturbation hop).",
    ),
    latency_from: int = typer.Option(
        None,
        min=0,
        help="Latency only from commands received at or after this time [ns since the epoch]; for a bench bag, "
        "its summary.json's flight_window_ns[0] (the flight, not the hold before it). Default: the whole bag.",
    ),
) -> None:
    """Bench metrics of a recorded bag: latency from stamps, rates, drops, failsafe, tracking and separation."""
    from rosbags.highlevel import AnyReaderError

    from sim2real.bench.metrics import BenchTopics, write_summary

    if not (bag / "metadata.yaml").is_file():
        typer.echo(f"bench metrics: {bag} is not a rosbag2 directory (it has no metadata.yaml)", err=True)
        raise typer.Exit(2)
    rates = {pattern: _hz(hz) for pattern, hz in (_assignment(item, "--rate", "PATTERN=HZ") for item in rate)}
    targets = {robot: _xyz(xyz) for robot, xyz in (_assignment(item, "--target", "ROBOT=X,Y,Z") for item in target)}
    stage_topics = _stage_topics(stages)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = write_summary(
            bag,
            out,
            nominal_rates=rates,
            targets=targets,
            collision_distance_m=collision_distance,
            topics=BenchTopics(truth=truth, stages=stage_topics),
            latency_from_ns=latency_from,
        )
    except AnyReaderError as err:
        typer.echo(f"bench metrics: cannot read the bag {bag}: {err}", err=True)
        raise typer.Exit(2) from err
    robots = ", ".join(summary["robots"]) or "none"
    typer.echo("\n".join([f"bag {bag}: robots {robots}", *_metrics_lines(summary, "all truth messages")]))
    typer.echo(_paths(metrics=out))


def _stage_topics(stages: str) -> tuple[str, ...]:
    """``--stages`` as topic names; a ``BadParameter`` for an empty or nested name."""
    names = tuple(name.strip() for name in stages.split(",")) if stages.strip() else ()
    for name in names:
        if not name or "/" in name:
            raise typer.BadParameter(
                f"{stages!r}: give per-robot topic names without the robot, comma-separated, e.g. 'odom_raw,odom'",
                param_hint="--stages",
            )
    return names


def _assignment(item: str, option: str, form: str) -> tuple[str, str]:
    """``NAME=VALUE`` split in two; a ``BadParameter`` naming ``option`` and the expected ``form`` otherwise."""
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise typer.BadParameter(f"{item!r} is not {form}", param_hint=option)
    return name, value


def _hz(value: str) -> float:
    """A rate [Hz] > 0; a ``BadParameter`` for ``--rate`` otherwise."""
    try:
        hz = float(value)
    except ValueError:
        hz = 0.0
    if not 0 < hz < math.inf:
        raise typer.BadParameter(f"{value!r} is not a rate in Hz > 0", param_hint="--rate")
    return hz


def _xyz(value: str) -> list[float]:
    """``X,Y,Z`` as three floats; a ``BadParameter`` for ``--target`` otherwise."""
    try:
        xyz = [float(v) for v in value.split(",")]
    except ValueError:
        xyz = []
    if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
        raise typer.BadParameter(f"{value!r} is not X,Y,Z (three finite numbers in metres)", param_hint="--target")
    return xyz


def _paths(**paths: str | Path | None) -> str:
    """``name  path`` lines for the outputs a command wrote (None paths left out)."""
    return "\n".join(f"{name:<8s}{path}" for name, path in paths.items() if path is not None)


perturb_app = _commands("Perturbation specs: list the kinds, check a spec.")
app.add_typer(perturb_app, name="perturb")


@perturb_app.command("list")
def perturb_list_command(
    kind: str = typer.Argument(None, help="Show only kinds starting with this prefix, e.g. obs or dynamics.mass."),
) -> None:
    """Document every perturbation kind, its parameters and the parameters all kinds share."""
    from sim2real.perturb import KINDS
    from sim2real.perturb.spec import COMMON_PARAMS

    chosen = [k for k in sorted(KINDS) if kind is None or k.startswith(kind)]
    if not chosen:
        raise typer.BadParameter(f"no kind starts with {kind!r}; prefixes: obs, action, dynamics, agents, timing, adv")
    for name in chosen:
        cls = KINDS[name]
        typer.echo(f"{name}: {cls.summary}")
        for pname, param in cls.params.items():
            typer.echo(f"    {pname}: {param.describe()}")
    typer.echo("\ncommon to every kind:")
    for pname, param in COMMON_PARAMS.items():
        typer.echo(f"    {pname}: {param.describe()}")
    typer.echo("\nstring form: kind(key=value,...)+kind(...)")
    typer.echo("  e.g. obs.gaussian(std=0.05,fields=pos)+agents.malicious(rate=0.05,mode=random)")


@perturb_app.command("check")
def perturb_check_command(
    spec: str = typer.Argument(..., help="A spec: the string form, or a YAML file."),
    env: str = typer.Option("drone-hover", help="Env whose observation layout and swarm the spec is checked against."),
    num_drones: int = typer.Option(4, min=1, help="Swarm size to check agent selections against."),
    action_type: str = typer.Option("vel", help="Action type: vel or rpm."),
) -> None:
    """Validate a spec against an env and explain what each perturbation will do."""
    from sim2real.envs import make
    from sim2real.perturb import SpecError, apply

    try:
        base = make(env, num_drones=num_drones, action_type=action_type)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    try:
        wrapped = apply(base, spec)
    except SpecError as err:
        typer.echo(f"invalid spec: {err}", err=True)
        raise typer.Exit(2) from err
    finally:
        base.close()
    typer.echo(f"valid: {len(wrapped.pipeline.items)} perturbation(s) on {env} ({num_drones} drones, {action_type})")
    for line in wrapped.pipeline.explain():
        typer.echo(f"  {line}")
    needs = sorted(set(wrapped.target_needs().values()))
    if needs:
        typer.echo(f"  note: the attacks need an AttackTarget with {', '.join(needs)} at run time")


def main() -> None:
    """Entry point of the ``sim2real`` script."""
    app()


if __name__ == "__main__":
    main()
