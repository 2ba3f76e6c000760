"""The ``sim2real`` command line, run in-process through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from sim2real import __version__
from sim2real.cli import app

runner = CliRunner()


def test_version_and_help_on_every_subcommand() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    subcommands = [[], ["envs"], ["demo"], ["train"], ["eval"], ["export"], ["bundle"], ["bundle", "verify"]]
    for sub in [*subcommands, ["perturb"], ["perturb", "list"], ["perturb", "check"], ["bench", "ros"]]:
        result = runner.invoke(app, [*sub, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
    # units in square brackets are printed as written (rich markup would swallow them)
    help_text = " ".join(runner.invoke(app, ["bench", "ros", "--help"], terminal_width=200).output.split())
    assert "Flight time [s] after start-up" in help_text and "How long [ms] before each burst" in help_text


def test_envs_lists_agents_and_spaces() -> None:
    result = runner.invoke(app, ["envs", "--num-drones", "6", "--action-type", "rpm"])
    assert result.exit_code == 0, result.output
    for name in ("drone-hover", "drone-formation", "drone-navigation"):
        assert name in result.output
    assert "agents: 6" in result.output
    assert "Box(-1.0, 1.0, (4,), float32)" in result.output
    assert "rel_goals[18]" in result.output  # navigation: 6 goals x 3


def test_perturb_list_documents_every_kind_and_check_explains_a_spec(tmp_path) -> None:
    from sim2real.perturb import KINDS

    result = runner.invoke(app, ["perturb", "list"])
    assert result.exit_code == 0
    for kind in KINDS:
        assert f"{kind}:" in result.output
    assert "agents: str" in result.output and "ramp: int" in result.output
    spec = "obs.gaussian(std=0.05,fields=pos)+agents.malicious(rate=0.05,mode=random)+adv.pgd(eps=0.1)"
    result = runner.invoke(app, ["perturb", "check", spec, "--num-drones", "3"])
    assert result.exit_code == 0, result.output
    assert "valid: 3 perturbation(s)" in result.output and "needs an AttackTarget" not in result.output
    assert "the attacks need an AttackTarget with policy" in result.output
    path = tmp_path / "suite.yaml"
    path.write_text("perturbations:\n  - kind: dynamics.mass\n    scale: [0.8, 1.2]\n    agents: [5]\n")
    result = runner.invoke(app, ["perturb", "check", str(path)])
    assert result.exit_code == 2 and "perturbations[0] (dynamics.mass).agents" in result.output
    result = runner.invoke(app, ["perturb", "check", "obs.gaussian(std=oops)"])
    assert result.exit_code == 2 and "(obs.gaussian).std: expected a number" in result.output


def test_bad_arguments_say_what_is_wrong() -> None:
    result = runner.invoke(app, ["demo", "--scenario", "hurricane"])
    assert result.exit_code == 2 and "not a built-in scenario" in result.output
    result = runner.invoke(app, ["envs", "--action-type", "thrust"])
    assert result.exit_code == 2 and "action_type" in result.output


def test_demo_trains_evaluates_exports_and_flies_the_bench(tmp_path) -> None:
    """The README's first command end to end, shortened: every stage's output is there and says what it should."""
    from mcap.reader import make_reader

    from sim2real.export import verify_bundle

    out = tmp_path / "demo"
    command = [sys.executable, "-m", "sim2real.cli", "demo", "--out", str(out), "--no-progress"]
    short = ["--steps", "3e4", "--episodes", "1", "--duration", "4"]
    proc = subprocess.run([*command, *short], capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["env_steps"] >= 3e4 and (out / "train" / "checkpoints").is_dir()
    evaluated = json.loads(Path(summary["evaluation"]["results"]).read_text())
    assert evaluated["suite"]["name"] == "quick"
    assert set(evaluated["family_ratio"]["batched"]) >= {"obs_noise", "attack"}
    assert Path(summary["report"]).is_file()
    assert verify_bundle(out / "bundle")["provenance"]["run_id"]
    bench = json.loads(Path(summary["metrics"]).read_text())
    assert bench["scenario"]["name"] == "noise" and bench["perturbation_events"]["count"] > 0
    assert bench["overall"]["robots"] == 4 and bench["overall"]["latency_ms"]["count"] > 0
    [bag_file] = Path(summary["bag"]).glob("*.mcap")
    with bag_file.open("rb") as stream:
        topics = {channel.topic for channel in make_reader(stream).get_summary().channels.values()}
    assert {"/cf1/odom_raw", "/cf1/odom", "/cf1/cmd_vel", "/bench/perturbation_events"} <= topics
    for name in ("report", "bag", "metrics"):
        assert f"{name} " in proc.stdout and summary[name] in proc.stdout
    # The run is kept: a second demo with another seed would mix runs and is refused before anything runs.
    again = subprocess.run([*command, *short, "--seed", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
