"""Robust training (ERNIE, ERNIE-ST, adversarial, Gaussian, DR) and the robustness suites, reports and comparison."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from sim2real.cli import app
from sim2real.config import ConfigError, validate
from sim2real.envs import make
from sim2real.eval.policies import load_policy
from sim2real.eval.suite import SuiteError, load_suite, parse_suite, run_suite
from sim2real.perturb.adversarial import divergence
from sim2real.train import Trainer
from sim2real.train.networks import Actor
from sim2real.train.robust import adversarial_divergence

runner = CliRunner()
SMALL = {
    "env": {"num_drones": 2, "num_envs": 16},
    "train": {
        "total_steps": 16 * 16 * 30,
        "rollout_steps": 16,
        "epochs": 2,
        "minibatches": 2,
        "lr": 3e-3,
        "lr_schedule": "constant",
    },
    "policy": {"hidden": [32, 32]},
    "checkpoint_every": 10,
    "eval_episodes": 0,
}


def _actor(seed: int = 0, obs_dim: int = 12, agents: int = 3) -> Actor:
    torch.manual_seed(seed)
    actor = Actor(obs_dim, agents, gym.spaces.Box(-1, 1, (3,)), [64, 64], init_log_std=-1.0)
    with torch.no_grad():  # a trained-looking, non-trivial policy: larger weights than the 0.01-gain head
        actor.head.weight.mul_(100.0)
    return actor


def _config(method: str, **robust) -> dict:
    return {**SMALL, "robust": {"method": method, **robust}}


# ---------------------------------------------------------------------------------------------- the regulariser
def test_pgd_finds_a_larger_divergence_than_random_directions_of_the_same_norm() -> None:
    actor = _actor()
    x = torch.randn(256, 3, 12, generator=torch.Generator().manual_seed(1))
    eps = 0.5
    found, delta = adversarial_divergence(actor, x, eps=eps, steps=5, generator=torch.Generator().manual_seed(2))
    assert torch.all(delta.norm(dim=-1) <= eps + 1e-5)
    clean = actor.dist_normalized(x)
    best_random = torch.zeros(256, 3)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(16):
            d = torch.randn(x.shape, generator=g)
            d = eps * d / d.norm(dim=-1, keepdim=True)  # on the sphere: the largest random perturbation
            best_random = torch.maximum(best_random, divergence(actor.dist_normalized(x + d), clean))
    found = found.detach()
    assert float(found.mean()) > 2.0 * float(best_random.mean())
    assert float((found >= best_random).float().mean()) > 0.95


def test_ernie_st_gradient_differs_from_the_detached_gradient() -> None:
    actor = _actor(seed=4)
    x = torch.randn(64, 3, 12, generator=torch.Generator().manual_seed(5))
    grads, values = {}, {}
    for st in (False, True):
        actor.zero_grad()
        reg, _ = adversarial_divergence(
            actor, x, eps=0.5, steps=3, stackelberg=st, generator=torch.Generator().manual_seed(6)
        )
        reg.mean().backward()
        values[st] = float(reg.mean().detach())
        grads[st] = torch.cat([p.grad.flatten() for p in actor.parameters() if p.grad is not None])
    assert values[False] == pytest.approx(values[True], rel=1e-5)  # same attack, same value ...
    gap = (grads[True] - grads[False]).norm() / grads[False].norm()
    assert gap > 1e-3  # ... but the Stackelberg gradient has the leader-follower term
    with pytest.raises(ValueError, match="needs norm l2"):
        adversarial_divergence(actor, x, eps=0.5, steps=1, norm="linf", stackelberg=True)


def _local_divergence(trainer: Trainer, obs: np.ndarray) -> tuple[float, float]:
    """Mean KL found by a 10-step PGD (eps 0.5) and the mean-action shift, on fixed observations."""
    actor = trainer.learner.actor
    x = actor.normalize(torch.as_tensor(obs))
    kl, delta = adversarial_divergence(actor, x, eps=0.5, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        shift = (actor.dist_normalized(x + delta).mean - actor.dist_normalized(x).mean).norm(dim=-1)
    return float(kl.mean().detach()), float(shift.mean())


def test_ernie_training_lowers_the_local_divergence_compared_with_vanilla(tmp_path: Path) -> None:
    obs = np.concatenate([make("drone-hover", num_envs=64, num_drones=2, seed=s).reset()[0] for s in (7, 8)])
    measured = {}
    for method in ("none", "ernie"):
        trainer = Trainer.create(validate(_config(method, ernie={"lam": 1.0})), tmp_path / method, progress=False)
        trainer.train()
        measured[method] = _local_divergence(trainer, obs)
    assert measured["ernie"][0] < 0.5 * measured["none"][0]  # the KL of Eq. 2 ...
    assert measured["ernie"][1] < measured["none"][1]  # ... and the worst-case mean-action shift
    metrics = [json.loads(line) for line in (tmp_path / "ernie" / "metrics.jsonl").read_text().splitlines()]
    assert all("ernie_reg" in m and 0.4 < m["ernie_delta_norm"] <= 0.5 + 1e-5 for m in metrics)


# ---------------------------------------------------------------------------------------------- rollout methods
def test_adversarial_and_gaussian_training_act_on_perturbed_observations_the_critic_sees_clean(tmp_path: Path):
    short = {"train": {**SMALL["train"], "total_steps": 16 * 16 * 2}}
    adv = Trainer.create(
        validate({**_config("adv-pgd", adv={"eps": 0.2, "fraction": 0.5}), **short}), tmp_path / "a", progress=False
    )
    adv.train()
    buf, std = adv.buffer, adv.learner.actor.obs_rms.std
    changed = (buf.obs - buf.critic_obs[:-1]).abs().amax(dim=(2, 3)) > 0  # [T, E]
    assert 0.3 < float(changed.float().mean()) < 0.7  # about half the env steps were attacked
    # within the l-inf budget in normalised units (the statistics moved by one update since the attack)
    assert float(((buf.obs - buf.critic_obs[:-1]).abs() / std).max()) < 0.2 * 1.5
    gauss = Trainer.create(
        validate({**_config("gaussian", gaussian={"std": 0.3}), **short}), tmp_path / "g", progress=False
    )
    gauss.train()
    noise = (gauss.buffer.obs - gauss.buffer.critic_obs[:-1]) / gauss.learner.actor.obs_rms.std
    assert float(noise.std()) == pytest.approx(0.3, rel=0.15)


def _resumed_equals_uninterrupted(config: dict, tmp_path: Path) -> Trainer:
    """Train 4 updates straight and 2 + 2 with a resume in between; assert equal actors; return the first."""
    steps = 16 * 16
    full = Trainer.create(
        validate({**config, "train": {**config["train"], "total_steps": 4 * steps}}), tmp_path / "a", progress=False
    )
    full.train()
    half = Trainer.create(
        validate({**config, "train": {**config["train"], "total_steps": 2 * steps}}), tmp_path / "b", progress=False
    )
    half.train()
    resumed = Trainer.resume(tmp_path / "b", overrides={"train.total_steps": 4 * steps}, progress=False)
    resumed.train()
    for key, value in full.learner.actor.state_dict().items():
        assert torch.equal(value, resumed.learner.actor.state_dict()[key]), key
    return full


def test_domain_randomization_draws_dynamics_and_resumes_exactly(tmp_path: Path) -> None:
    full = _resumed_equals_uninterrupted(_config("dr"), tmp_path)
    masses = full.env.sim.params.mass
    assert masses.std() > 0.0 and 0.7 * 0.027 <= masses.min() and masses.max() <= 1.3 * 0.027 + 1e-9


@pytest.mark.parametrize("method", ["ernie-st", "adv-pgd", "gaussian"])
def test_robust_runs_resume_to_the_uninterrupted_parameters(tmp_path: Path, method: str) -> None:
    _resumed_equals_uninterrupted(_config(method), tmp_path)


@pytest.mark.parametrize(
    ("robust", "message"),
    [
        ({"method": "ernie-st", "ernie": {"norm": "linf"}}, "ernie-st needs robust.ernie.norm l2"),
        ({"method": "ernei"}, "robust.method"),
        ({"method": "ernie", "ernie": {"eps": -1}}, "robust.ernie.eps"),
        ({"method": "adv-pgd", "adv": {"fraction": 2}}, "robust.adv.fraction"),
        ({"method": "dr", "dr": {"spec": "dynamics.mass(scale=-1)"}}, "robust.dr.spec"),
        ({"method": "dr", "dr": {"spec": "adv.fgsm(eps=0.1)"}}, "dynamics.\\* kinds only"),
        ({"method": "dr", "extra": "perturbations"}, "both perturb the training env"),
    ],
)
def test_bad_robust_config_is_rejected_with_the_field_named(robust: dict, message: str) -> None:
    data = {"robust": robust}
    if robust.pop("extra", None):
        data["perturbations"] = "dynamics.mass(scale=1.2)"
    with pytest.raises(ConfigError, match=message):
        validate(data)


# ---------------------------------------------------------------------------------------------- suites
def test_suite_files_round_trip(tmp_path: Path) -> None:
    for name in ("standard", "quick"):
        suite = load_suite(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(suite.to_dict()))
        again = load_suite(path)
        assert [asdict(c) for c in again.conditions] == [asdict(c) for c in suite.conditions]
        assert again.to_dict() == suite.to_dict()
    standard = load_suite("standard")
    families = {c.family for c in standard.conditions}
    assert families == {"clean", "obs_noise", "attack", "dynamics", "malicious", "timing"}
    budgets = {c.sweep: [x.budget for x in standard.conditions if x.sweep == c.sweep] for c in standard.conditions}
    assert budgets["mass"] == [0.6, 0.8, 1.2, 1.4] and budgets["pgd"] == [0.05, 0.1, 0.2]
    assert budgets["malicious-random"] == budgets["malicious-adversarial"] == [0.03, 0.05, 0.1]
    # a suite without a clean condition gets one, first
    suite = parse_suite({"conditions": [{"family": "timing", "name": "lag", "spec": "timing.latency(steps=2)"}]})
    assert [c.name for c in suite.conditions] == ["clean", "lag"]


GOOD = {"family": "obs_noise", "name": "n", "spec": {"kind": "obs.gaussian", "std": 0.1}}


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ([1, 2], "a suite is a mapping"),
        ({"conditions": []}, "non-empty list"),
        ({"conditions": [GOOD], "episodes": 3}, "unknown suite key"),
        ({"conditions": [{**GOOD, "family": "noise"}]}, r"conditions\[0\].family: 'noise' is not one of"),
        ({"conditions": [{**GOOD, "spec": None}]}, r"conditions\[0\].spec: a obs_noise condition needs"),
        ({"conditions": [{**GOOD, "spec": "obs.gauss(std=1)"}]}, r"conditions\[0\].spec: .*obs.gauss"),
        ({"conditions": [{**GOOD, "spec": {"kind": "obs.gaussian", "std": -1}}]}, r"conditions\[0\].spec: .*std"),
        ({"conditions": [{**GOOD, "sweep": {"param": "sigma", "values": [1]}}]}, "has no parameter 'sigma'"),
        ({"conditions": [{**GOOD, "sweep": {"param": "std", "values": [0.1, -2]}}]}, r"sweep.values\[1\]"),
        ({"conditions": [{**GOOD, "sweep": [0.1]}]}, "expected {param: NAME"),
        ({"conditions": [GOOD, GOOD]}, "repeated: \\['n'\\]"),
        ({"conditions": [{**GOOD, "add_effects": ["wind"]}]}, "add_effects"),
        ({"conditions": [{**GOOD, "budget": 1}]}, "unknown key"),
        ({"conditions": [{"family": "clean", "name": "clean", "spec": "obs.gaussian(std=1)"}]}, "clean condition has"),
        ({"conditions": [{"family": "clean", "name": "baseline"}]}, "the clean condition is named clean"),
        ({"conditions": [{**GOOD, "sweep": {"param": "std", "values": ["high"]}}]}, "a sweep varies a number"),
    ],
)
def test_broken_suites_are_rejected_clearly(suite: object, message: str) -> None:
    with pytest.raises(SuiteError, match=message):
        parse_suite(suite)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("runs")
    runs = []
    for method in ("none", "gaussian"):
        config = validate({**_config(method), "train": {**SMALL["train"], "total_steps": 16 * 16 * 8}})
        Trainer.create(config, base / method, progress=False).train()
        runs.append(base / method)
    return runs


def test_cli_runs_a_suite_on_both_backends_writes_a_report_and_compares_methods(two_runs: list[Path], tmp_path):
    for run in two_runs:
        args = ["eval", str(run), "--suite", "quick", "--episodes", "2", "--backend", "both", "--no-progress"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        record = json.loads((run / "eval" / "results.json").read_text())
        assert list(record["families"]) == ["clean", "obs_noise", "attack", "dynamics", "malicious", "timing"]
        for family, conditions in record["families"].items():
            for name, entry in conditions.items():
                for backend in ("batched", "pybullet"):
                    r = entry[backend]
                    assert r["robustness_ratio"] == pytest.approx(
                        r["mean_return"] / record["families"]["clean"]["clean"][backend]["mean_return"]
                    ), (family, name)
        assert record["families"]["clean"]["clean"]["pybullet"]["robustness_ratio"] == 1.0
        report = (run / "eval" / "report.md").read_text()
        assert "## attack" in report and "fgsm-0.1" in report and (run / "eval" / "ratios.png").stat().st_size > 0
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["eval", "--compare", *map(str, two_runs), "--out", str(out), "--backend", "pybullet"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "compare.json").read_text())["backend"] == "pybullet"
    result = runner.invoke(app, ["eval", "--compare", *map(str, two_runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads((out / "compare.json").read_text())
    assert set(table["methods"]) == {"mappo", "gaussian"}
    assert table["methods"]["mappo"]["conditions"]["fgsm-0.1"]["seeds"] == 1
    assert table["backend"] == "batched"
    assert (out / "heatmap.png").stat().st_size > 0 and "| fgsm-0.1 |" in (out / "compare.md").read_text()
    # the bundle's manifest carries the suite summary of exactly the exported checkpoint
    from sim2real.export.exporter import export_run

    manifest = export_run(two_runs[0], tmp_path / "bundle")
    first = json.loads((two_runs[0] / "eval" / "results.json").read_text())
    assert manifest["evaluation"]["eval"]["suite"] == "quick"
    assert manifest["evaluation"]["eval"]["family_ratio"] == first["family_ratio"]
    assert manifest["evaluation"]["eval"]["clean"] == first["families"]["clean"]["clean"]
    # two runs of one method with different parameters are not seeds of one method
    record = json.loads((two_runs[1] / "eval" / "results.json").read_text())
    record["policy"]["training"]["robust"]["gaussian"]["std"] = 0.5
    other = tmp_path / "other.json"
    other.write_text(json.dumps(record))
    result = runner.invoke(app, ["eval", "--compare", str(two_runs[1]), str(other), "--out", str(out)])
    assert result.exit_code == 2 and "different parameters" in result.output, result.output


def test_suite_skips_what_the_policy_cannot_be_attacked_with_and_the_cli_rejects_bad_input(two_runs, tmp_path):
    suite = parse_suite(
        {
            "conditions": [
                {"family": "malicious", "name": "adv", "spec": "agents.malicious(rate=0.1,mode=adversarial)"},
                {"family": "dynamics", "name": "drag", "spec": "dynamics.drag(scale=2)", "add_effects": ["drag"]},
            ]
        }
    )
    record = run_suite(load_policy(two_runs[0]), suite, episodes=2, progress=False)
    clean = record["families"]["clean"]["clean"]["batched"]["mean_return"]
    assert record["families"]["dynamics"]["drag"]["batched"]["mean_return"] != clean  # drag was switched on
    # a run's adversarial teammates use its fitted team critic (cached next to the checkpoints)...
    assert "skipped" not in record["families"]["malicious"]["adv"]
    assert record["team_critic"]["heldout_r2"] > 0.5
    assert len(list((two_runs[0] / "team_q").glob("update_*.pt"))) == 1
    # ...an exported file has no critic: the condition is kept with the reason
    from sim2real.export.exporter import export_run

    export_run(two_runs[0], tmp_path / "bundle")
    record = run_suite(load_policy(tmp_path / "bundle"), suite, episodes=2, progress=False)
    assert "team_critic" in record["families"]["malicious"]["adv"]["skipped"]
    assert "malicious" not in record["family_ratio"]["batched"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("conditions:\n  - {family: noise, name: x}\n")
    for args, message in [
        (["--suite", str(broken)], "'noise' is not one of"),
        (["--suite", "nosuch"], "not a built-in"),
        (["--suite", "quick", "--perturb", "obs.gaussian(std=0.1)"], "either --suite or --perturb"),
        (["--backend", "gazebo"], "unknown backend"),
    ]:
        result = runner.invoke(app, ["eval", str(two_runs[0]), *args, "--no-progress"])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, ["eval", "--compare", str(tmp_path)])
    assert result.exit_code == 2 and "first" in result.output


def test_fitted_team_q_ranks_teammate_actions_like_a_one_step_lookahead(two_runs: list[Path]) -> None:
    """The fitted Q(s, a) orders one agent's malicious candidates as the simulator's r + gamma V(s') does."""
    import copy
    import itertools

    from sim2real.train import load_learner
    from sim2real.train.team_q import fit_team_q

    loaded = load_learner(two_runs[0])
    net, stats = fit_team_q(loaded, num_envs=64, steps=120, epochs=20)
    assert stats["heldout_r2"] > 0.5 and stats["transitions"] == 64 * 120
    learner, gamma = loaded.learner, loaded.config.train.gamma
    env = make(loaded.config.env.name, num_envs=32, seed=5, **loaded.config.env.make_kwargs())
    obs, _ = env.reset(seed=5)
    act = learner.policy()
    for _ in range(20):
        obs, *_ = env.step(act(obs))
    base = act(obs)
    corners = np.array(list(itertools.product((-1.0, 1.0), repeat=base.shape[-1])), np.float32)
    candidates = [*corners, np.zeros(base.shape[-1], np.float32)]
    true_q, fitted_q = [], []
    o = torch.as_tensor(obs)
    for cand in candidates:
        joint = base.copy()
        joint[:, 0] = cand
        trial = copy.deepcopy(env)
        next_obs, reward, terminated, *_ = trial.step(joint)
        with torch.no_grad():
            v_next = learner.values(torch.as_tensor(next_obs)) * torch.as_tensor(~terminated)
            true_q.append((torch.as_tensor(reward) + gamma * v_next).sum(-1).numpy())
            fitted_q.append(net(learner.actor.normalize(o).flatten(1), torch.as_tensor(joint).flatten(1)).numpy())
    true_q, fitted_q = np.stack(true_q, 1), np.stack(fitted_q, 1)  # [E, C]
    corr = [np.corrcoef(t, f)[0, 1] for t, f in zip(true_q, fitted_q, strict=True)]
    assert np.median(corr) > 0.7, corr
    picked = true_q[np.arange(len(true_q)), fitted_q.argmin(axis=1)]
    assert np.mean(picked < true_q.mean(axis=1)) > 0.8  # the greedy pick is worse than an average candidate
