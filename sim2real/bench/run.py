"""``sim2real bench ros``: one bench run of an exported policy on the simulated swarm over ROS 2.

A scenario (YAML: ``name``, ``description``, ``perturbations`` (a perturbation spec), and optionally
``mode`` (``realtime``/``lockstep``), ``backend``, ``seed``) says what to inject. The run starts, in one
private ROS domain (:class:`~sim2real.bench.launcher.BenchLauncher`):

- the recorder (every topic to ``OUT/bag``, rosbag2 MCAP; in real time it takes on each ``/clock``, which the
  bridge publishes at the start of its period, while the control path is idle);
- the sim bridge (the bundle's env on PyBullet; ``dynamics.*`` kinds of the spec act there; its odometry, before
  any perturbation, is the ground truth of the tracking and separation metrics);
- the perturbation node, when the spec has message kinds: odometry ``odom_raw -> odom`` and, for
  ``agents.*``/``action.*`` kinds, commands ``cmd_vel_raw -> cmd_vel``;
- the policy node with the bundle;

flies for ``duration_s``, stops everything by process group and writes ``OUT/summary.json``: the bench metrics
(:mod:`sim2real.bench.metrics`; the latency by stage at ``odom_raw`` and ``odom`` with the hop, ``odom`` without,
and ``cmd_vel_raw`` with a command hop) with the scenario, the bundle, how each process ended and how it was
scheduled (``scheduling``: the requested ``realtime_priority`` and the processes that were refused it), the flight's
wall-clock window (``flight_window_ns``: the latency counts the commands received in it from its start, not the hold
before), the machine's own wake-up latency over the flight (``host``, :mod:`sim2real.bench.wakeup`, a
``cyclictest``-style probe at ``SCHED_FIFO`` 99 beside the bench; its wake-ups in ``OUT/wakeups.npz``), and
``OUT/tracking.png`` (:mod:`sim2real.bench.plot`, with matplotlib).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from sim2real.bench.bridge import BridgeSim, split_spec
from sim2real.bench.launcher import BenchLauncher, ProcessSpec
from sim2real.bench.metrics import BenchTopics, compute_metrics, latency_stats, read_bag
from sim2real.bench.plot import plot_tracking
from sim2real.bench.wakeup import load_wakeups
from sim2real.deploy.realtime import REFUSED, check_priority
from sim2real.export import verify_bundle

SCENARIO_DIR = Path(__file__).parent / "scenarios"
MODES = ("realtime", "lockstep")
STARTUP_TIMEOUT_S = 60.0
HOLD_FRACTION = 0.5


class ScenarioError(ValueError):
    """A scenario file is missing or malformed."""


@dataclass(frozen=True)
class Scenario:
    """What one bench run injects and how it steps (see the module docstring)."""

    name: str
    description: str = ""
    perturbations: dict[str, Any] | None = None
    mode: str = "realtime"
    backend: str = "pybullet"
    seed: int = 0


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``sim2real/bench/scenarios``."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name or a YAML file; raises :class:`ScenarioError` naming what is wrong."""
    from sim2real import perturb

    path = Path(name_or_path)
    if not path.suffix:
        path = SCENARIO_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ScenarioError(f"{name_or_path!r} is not a built-in scenario ({', '.join(builtin_scenarios())})")
    if not path.is_file():
        raise ScenarioError(f"scenario file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping with name, description and perturbations")
    unknown = set(data) - {"name", "description", "perturbations", "mode", "backend", "seed"}
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
    if data.get("mode", "realtime") not in MODES:
        raise ScenarioError(f"{path}: mode must be one of {MODES}, got {data['mode']!r}")
    if data.get("backend", "pybullet") not in ("pybullet", "batched"):
        raise ScenarioError(f"{path}: backend must be pybullet or batched, got {data['backend']!r}")
    spec = None
    if data.get("perturbations"):
        try:
            spec = perturb.parse_spec({"perturbations": data["perturbations"]}).to_dict()
        except perturb.SpecError as err:
            raise ScenarioError(f"{path}: {err}") from None
    return Scenario(
        name=str(data.get("name", path.stem)),
        description=str(data.get("description", "")),
        perturbations=spec,
        mode=data.get("mode", "realtime"),
        backend=data.get("backend", "pybullet"),
        seed=int(data.get("seed", 0)),
    )


def _node(name: str, module: str, params: dict[str, Any], out_dir: Path, realtime_priority: int) -> ProcessSpec:
    """A node process with its parameters (and ``realtime_priority``) in ``OUT/params/NAME.yaml`` (strings stay
    strings)."""
    path = out_dir / "params" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {**params, "realtime_priority": realtime_priority}
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return ProcessSpec(name, [sys.executable, "-m", module, "--ros-args", "--params-file", str(path)])


def _uses_commands(spec: dict[str, Any] | None) -> bool:
    """Whether a message spec acts on commands (malicious agents, actuator kinds, command-link timing)."""
    items = spec["perturbations"] if spec else []
    return any(p["kind"].split(".")[0] in ("agents", "action") or p.get("on") == "action" for p in items)


def run_bench(
    bundle: str | Path,
    scenario: Scenario,
    *,
    duration_s: float = 20.0,
    out_dir: str | Path,
    hold_after_s: float | None = None,
    rate_hz: float | None = None,
    realtime_priority: int = 0,
    warmup_lead_s: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fly ``bundle``'s policy on the simulated swarm under ``scenario`` for ``duration_s``; returns the summary.

    ``OUT`` gets ``bag/`` (rosbag2 MCAP), ``logs/`` (one per process), ``params/``, ``wakeups.npz`` (the host
    probe's), ``summary.json`` and ``tracking.png`` (with matplotlib; its path is the summary's ``plot``).
    Tracking error is measured from the sim bridge's ground truth over the hold window: from ``hold_after_s``
    after the flight started (default: its second half, as the simulation evaluation does) to the end. In
    lock-step mode (``scenario.mode``) the stamps are simulated time: ``hold_after_s`` counts simulated seconds,
    the summary adds ``simulated_s`` and has no latency (a simulated stamp against a wall-clock arrival).
    ``rate_hz`` runs the sim bridge and the policy node at another rate than the trained one (latency
    benchmarks). ``realtime_priority`` (1-99; 0, the default, is normal scheduling) runs every bench process on
    ``SCHED_FIFO`` at that priority once it has started (the nodes' ``realtime_priority`` parameter), as a
    robot's control stack would run; the summary's ``scheduling`` says which processes were refused it.
    ``warmup_lead_s`` sets the perturbation and policy nodes' ``warmup_lead_s`` (:mod:`s2r_ros.warmup`; 0: no
    warm-up; None: their default, 2.5 ms); the nodes warm up only on ``SCHED_FIFO`` (``realtime_priority``).
    """
    check_priority(realtime_priority)
    if warmup_lead_s is not None and warmup_lead_s < 0:
        raise ValueError(f"warmup_lead_s must be >= 0 s (0: no warm-up), got {warmup_lead_s}")
    warmup = {} if warmup_lead_s is None else {"warmup_lead_s": float(warmup_lead_s)}
    out_dir = Path(out_dir)
    if (out_dir / "bag").exists():
        raise FileExistsError(f"{out_dir / 'bag'} exists: choose a new --out directory")
    bundle = Path(bundle).resolve()
    contract = verify_bundle(bundle)["contract"]
    n = int(contract["num_agents"])
    robots = [f"cf{i + 1}" for i in range(n)]
    dynamics, messages = split_spec(scenario.perturbations)
    hop, command_hop = messages is not None, _uses_commands(messages)
    lockstep = scenario.mode == "lockstep"
    command = "cmd_vel" if contract["action_type"] == "vel" else "cmd_rpm"
    if command_hop and command != "cmd_vel":
        raise ScenarioError(f"scenario {scenario.name}: command perturbations need a velocity policy")
    targets_sim = BridgeSim(contract["env_id"], dict(contract["env_params"]), backend="batched", seed=scenario.seed)
    targets = {robot: target.tolist() for robot, target in zip(robots, targets_sim.targets(), strict=True)}
    targets_sim.close()

    stages = (["odom_raw", "odom"] if hop else ["odom"]) + ([f"{command}_raw"] if command_hop else [])
    # the bridge's unperturbed odometry is the truth
    topics = BenchTopics(truth="odom_raw" if hop else "odom", stages=tuple(stages))
    recorded = ["odom", command] + (["odom_raw"] if hop else []) + ([f"{command}_raw"] if command_hop else [])
    recorded_topics = [f"/{robot}/{topic}" for robot in robots for topic in recorded] + [topics.diagnostics]
    recorded_topics += [topics.perturbation_events] if hop else []  # the bridge flies once all are recorded
    # in real time the bridge publishes /clock at the start of each period: the recorder takes while the loop idles
    recorder = {"output_dir": str(out_dir / "bag"), "beat_topic": "" if lockstep else "/clock"}
    processes = [
        _node("recorder", "s2r_bench.recorder_node", recorder, out_dir, realtime_priority),
        _node(
            "sim_bridge",
            "s2r_bench.sim_bridge_node",
            {
                "bundle": str(bundle),
                "robots": robots,
                "backend": scenario.backend,
                "seed": scenario.seed,
                "duration_s": float(duration_s) + STARTUP_TIMEOUT_S,
                "mode": scenario.mode,
                "state_topic": "odom_raw" if hop else "odom",
                "dynamics": json.dumps(dynamics) if dynamics else "",
                "rate_hz": float(rate_hz or 0.0),
                "min_state_subscribers": 2,  # its consumer and the recorder
                "recorded_topics": recorded_topics,
            },
            out_dir,
            realtime_priority,
        ),
    ]
    if hop:
        processes.append(
            _node(
                "perturbation_node",
                "s2r_bench.perturbation_node",
                {
                    "bundle": str(bundle),
                    "robots": robots,
                    "spec": json.dumps(messages),
                    "seed": scenario.seed,
                    "command_in": f"{command}_raw" if command_hop else "",
                    "command_out": command,
                    **warmup,
                },
                out_dir,
                realtime_priority,
            )
        )
    processes.append(
        _node(
            "policy_node",
            "s2r_ros.policy_node",
            {
                "bundle": str(bundle),
                "robots": robots,
                "command_topic": f"{command}_raw" if command_hop else command,
                "use_sim_time": lockstep,  # lock step stamps with the simulated time
                **({"rate_hz": float(rate_hz)} if rate_hz else {}),
                **warmup,
            },
            out_dir,
            realtime_priority,
        )
    )
    wakeups_path = out_dir / "wakeups.npz"
    probe = ProcessSpec("wakeup_probe", [sys.executable, "-m", "sim2real.bench.wakeup", "--out", str(wakeups_path)])
    started = time.time()
    with BenchLauncher(out_dir) as bench:
        bench.start(probe)
        bench.start(processes[0])
        bench.wait_for_output("recorder", "recording to", STARTUP_TIMEOUT_S)
        for spec in processes[1:]:
            bench.start(spec)
        bench.wait_for_output("policy_node", "event-driven", STARTUP_TIMEOUT_S)
        bench.wait_for_output("sim_bridge", "flying", STARTUP_TIMEOUT_S)
        flight_start_ns = time.time_ns()
        steps = max(1, int(duration_s * 10))
        flight = tqdm(
            range(steps),
            desc=f"bench {scenario.name}",
            unit_scale=duration_s / steps,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]",
            disable=not progress,
        )
        for _ in flight:
            bench.run_for(duration_s / steps)
        flight_end_ns = time.time_ns()
        domain_id = bench.domain_id
    exits = {
        name: {"returncode": e.returncode, "stopped_by": e.stopped_by, "cpu_percent": e.cpu_percent}
        for name, e in bench.exits.items()
    }
    # over the flight's wall-clock window (lock step resets flight_start_ns below); None if the probe wrote nothing
    host = load_wakeups(wakeups_path).summary(flight_start_ns, flight_end_ns) if wakeups_path.is_file() else None
    flight_window_ns = [flight_start_ns, flight_end_ns]  # wall clock: the latency window of the metrics
    contents = read_bag(out_dir / "bag", topics)
    if lockstep:  # stamps are simulated time from 0: the flight's length is what was simulated
        flight_start_ns = 0
        flown_s = max((max(t) for t in contents.truth.values() if t), default=0) / 1e9
    else:
        flown_s = duration_s
    hold_after_s = (1.0 - HOLD_FRACTION) * flown_s if hold_after_s is None else hold_after_s
    hold_from_ns = flight_start_ns + int(hold_after_s * 1e9)
    summary = compute_metrics(
        out_dir / "bag",
        topics=topics,
        contents=contents,
        nominal_rates={"/*/odom": float(rate_hz or contract["ctrl_freq_hz"])},
        targets=targets,
        collision_distance_m=0.1,
        hold_from_ns=hold_from_ns,
        latency_from_ns=None if lockstep else flight_start_ns,  # not the hold before the flight
    )
    summary.update(
        scenario={"name": scenario.name, "description": scenario.description, "spec": scenario.perturbations},
        bundle=str(bundle),
        duration_s=duration_s,
        hold_after_s=hold_after_s,
        wall_s=round(time.time() - started, 2),
        ros_domain_id=domain_id,
        processes=exits,
        injection={"odometry": hop, "commands": command_hop, "dynamics_in_sim": dynamics},
        host=host,
        flight_window_ns=flight_window_ns,
        scheduling={
            "realtime_priority": realtime_priority,
            "refused": sorted(
                spec.name
                for spec in processes
                if realtime_priority and REFUSED in bench.exits[spec.name].log_path.read_text()
            ),
        },
    )
    if lockstep:  # a simulated-time stamp against a wall-clock receive time is no latency
        summary["simulated_s"] = round(flown_s, 3)
        summary["overall"]["latency_ms"] = latency_stats([])
        summary["overall"]["latency_stages_ms"] = None
        for robot in summary["robots"].values():
            robot["latency_ms"] = latency_stats([])
    title = f"bench {scenario.name}: {scenario.description or 'no perturbation'}"
    plot = plot_tracking(
        contents, targets, out_dir / "tracking.png", start_ns=flight_start_ns, hold_from_ns=hold_from_ns, title=title
    )
    if plot is not None:
        summary["plot"] = str(plot)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
