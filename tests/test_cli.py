"""The ``sim2real`` command line, run in-process through typer's runner and as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from sim2real import __version__
from sim2real.cli import app

runner = CliRunner()


def test_version_and_help_on_every_subcommand() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    subcommands = [[], ["envs"], ["demo"], ["train"], ["eval"], ["export"], ["bundle"], ["bundle", "verify"]]
    for sub in [*subcommands, ["perturb"], ["perturb", "list"], ["perturb", "check"]]:
        result = runner.invoke(app, [*sub, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


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
    result = runner.invoke(app, ["demo", "--effects", "turbulence"])
    assert result.exit_code == 2 and "unknown effect" in result.output
    result = runner.invoke(app, ["envs", "--action-type", "thrust"])
    assert result.exit_code == 2 and "action_type" in result.output


@pytest.mark.slow
def test_demo_flies_the_formation_on_both_backends(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sim2real.cli", "demo", "--seconds", "6", "--num-drones", "6", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["backend"] for r in summary["results"]] == ["pybullet", "batched"]
    for r in summary["results"]:
        assert r["crashes"] == 0 and r["collisions"] == 0
        assert r["mean_pos_error_m"] < 0.1  # still converging during the short flight
    assert "largest PyBullet vs batched position gap" in proc.stdout
