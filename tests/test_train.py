"""MAPPO/IPPO, the training runner, checkpoints and resume, configs and the evaluation helper."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import MatchCueEnv

from sim2real.config import ConfigError, load, validate
from sim2real.eval import evaluate
from sim2real.train import Trainer, TrainingHook, load_learner
from sim2real.train.buffer import gae
from sim2real.train.runner import checkpoints

TINY = {
    "env": {"num_drones": 2, "num_envs": 8},
    "train": {"total_steps": 8 * 16 * 40, "rollout_steps": 16, "epochs": 2, "minibatches": 2},
    "policy": {"hidden": [32, 32]},
    "checkpoint_every": 1,
    "eval_episodes": 0,
}


def params(learner) -> dict[str, torch.Tensor]:
    return {**learner.actor.state_dict(), **{f"critic.{k}": v for k, v in learner.critic.state_dict().items()}}


# ---------------------------------------------------------------------------------------------- learning
def test_short_run_improves_return_on_single_drone_hover(tmp_path: Path) -> None:
    config = validate(
        {
            "env": {"num_drones": 1, "num_envs": 128},
            "train": {"total_steps": 128 * 16 * 50, "rollout_steps": 16, "lr": 3e-3, "lr_schedule": "constant"},
            "eval_episodes": 0,
        }
    )
    trainer = Trainer.create(config, tmp_path / "run", progress=False)
    kwargs = config.env.make_kwargs()
    before = evaluate(trainer.learner.policy(), "drone-hover", kwargs, episodes=32, seed=123).summary()
    trainer.train()
    after = evaluate(trainer.learner.policy(), "drone-hover", kwargs, episodes=32, seed=123).summary()
    assert after["mean_return"] > before["mean_return"] + 40.0
    assert after["mean_position_error_m"] < 0.5 * before["mean_position_error_m"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 50


def test_categorical_head_and_global_state_critic_learn_a_discrete_task(tmp_path: Path, match_cue: str) -> None:
    config = validate(
        {
            "env": {"name": match_cue, "num_drones": 2, "num_envs": 32, "action_type": None},
            "train": {"total_steps": 32 * 16 * 30, "rollout_steps": 16, "lr": 3e-3, "ent_coef": 0.01},
            "eval_episodes": 0,
        }
    )
    trainer = Trainer.create(config, tmp_path / "run", progress=False)
    assert trainer.learner.critic.body[0].in_features == 6 + 2  # global state + agent id
    trainer.train()
    env = MatchCueEnv(num_envs=256, seed=5)
    obs, _ = env.reset()
    chosen = trainer.learner.policy()(obs)
    assert chosen.dtype == np.int64 and chosen.shape == (256, 2)
    assert np.mean(chosen == env.cue) > 0.95


def test_ippo_critic_sees_only_own_observation() -> None:
    from sim2real.train import MAPPO

    def value_change(algo: str) -> float:
        config = validate({**TINY, "algo": algo})
        learner = MAPPO(10, 3, gym.spaces.Box(-1, 1, (2,)), config)
        obs = torch.randn(5, 3, 10)
        other = obs.clone()
        other[:, 1:] += 1.0  # change agents 1 and 2 only
        return float((learner.values(obs)[:, 0] - learner.values(other)[:, 0]).abs().max())

    assert value_change("ippo") == 0.0
    assert value_change("mappo") > 1e-4


def test_gae_matches_hand_computation() -> None:
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, dones, gamma, lam)
    d2 = 3.0 + gamma * 2.0 - 1.5
    d1 = 2.0 - 1.0  # episode ends: no bootstrap
    d0 = 1.0 + gamma * 1.0 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1], [d1], [d2]])
    assert torch.allclose(adv, expected)
    assert torch.allclose(ret, expected + values[:-1])


class PullToZero(TrainingHook):
    """Adds ``weight * mean(mu^2)`` to the actor loss and counts the rollout observations it saw."""

    def __init__(self, weight: float) -> None:
        self.weight, self.seen = weight, 0
        self.first_value_gap: float | None = None

    def transform_obs(self, obs, learner):
        self.seen += 1
        return obs

    def actor_loss(self, batch, learner):
        return self.weight * (learner.actor(batch.obs).mean ** 2).mean()

    def critic_loss(self, batch, learner):
        if self.first_value_gap is None:  # before any step, the critic still outputs the rollout's predictions
            with torch.no_grad():
                now = learner.critic(learner.critic_input(batch.critic_obs, batch.states))
            self.first_value_gap = float((now - batch.value_preds).abs().max())
        return None

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


def test_hooks_add_losses_and_see_rollouts(tmp_path: Path) -> None:
    config = validate({**TINY, "train": {**TINY["train"], "total_steps": 8 * 16 * 10, "lr": 3e-3}})
    magnitude = {}
    for weight in (0.0, 100.0):
        hook = PullToZero(weight)
        trainer = Trainer.create(config, tmp_path / f"w{weight}", hooks=[hook], progress=False)
        trainer.train()
        assert hook.seen == 10 * 16
        assert hook.first_value_gap is not None and hook.first_value_gap < 1e-5
        obs, _ = trainer.env.reset(seed=1)
        with torch.no_grad():
            magnitude[weight] = float(trainer.learner.actor(torch.as_tensor(obs)).mean.abs().mean())
    assert magnitude[100.0] < 0.2 * magnitude[0.0]


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    trainer = Trainer.create(validate(TINY), tmp_path_factory.mktemp("ref") / "run", progress=False)
    trainer.train()
    return params(trainer.learner)


def _start_cli(run_dir: Path, config_path: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "sim2real.cli", "train", str(config_path), "--out", str(run_dir), "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for_checkpoint(run_dir: Path, update: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / f"update_{update:06d}.pt").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_resume_after_stop_gives_the_uninterrupted_parameters(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor], how: str
) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    run_dir = tmp_path / "run"
    proc = _start_cli(run_dir, config_path)
    _wait_for_checkpoint(run_dir, 3, proc)
    proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    stopped_at = int(checkpoints(run_dir)[-1].stem.split("_")[1])
    assert stopped_at < 40, "the run finished before it was stopped; make TINY longer"
    if how == "ctrl-c":
        assert proc.returncode == 0, output
        assert f"sim2real train --resume {run_dir}" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    trainer = Trainer.resume(run_dir, progress=False)
    assert trainer.update_idx == stopped_at
    trainer.train()
    resumed = params(trainer.learner)
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key
    updates = [yaml.safe_load(line)["update"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert updates == list(range(1, 41))
    assert len(checkpoints(run_dir)) <= TINY.get("keep_checkpoints", 3) + 1


def test_training_perturbations_and_attack_target_survive_a_checkpoint(tmp_path: Path) -> None:
    config = validate(
        {
            **TINY,
            "train": {**TINY["train"], "total_steps": 8 * 16 * 2},
            "perturbations": "adv.fgsm(eps=0.1)+dynamics.mass(scale=[0.8,1.2])",
        }
    )
    trainer = Trainer.create(config, tmp_path / "run", progress=False)
    trainer.train()
    masses = trainer.env.sim.params.mass
    assert masses.std() > 0.0  # domain randomisation drew per-drone masses
    assert trainer.env.log.counts()["0:adv.fgsm"]["events"] > 0
    resumed = Trainer.resume(tmp_path / "run", overrides={"train.total_steps": 8 * 16 * 3}, progress=False)
    assert resumed.env.pipeline.ctx.target.policy is resumed.learner.actor
    resumed.train()
    assert resumed.update_idx == 3
    learner, loaded, *_ = load_learner(tmp_path / "run")
    assert loaded.perturbations == config.perturbations
    for key, value in params(resumed.learner).items():
        assert torch.equal(value, params(learner)[key])


def test_new_run_refuses_to_overwrite_and_resume_needs_a_run(tmp_path: Path) -> None:
    from sim2real.train import RunError

    config = validate({**TINY, "train": {**TINY["train"], "total_steps": 8 * 16}})
    Trainer.create(config, tmp_path / "run", progress=False).train()
    with pytest.raises(RunError, match="--resume"):
        Trainer.create(config, tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="not a run directory"):
        Trainer.resume(tmp_path / "nothing", progress=False)
    with pytest.raises(RunError, match="cannot change on resume"):
        Trainer.resume(tmp_path / "run", overrides={"train.lr": 1.0}, progress=False)
    with pytest.raises(ConfigError, match=r"train\.time_limit_s"):
        Trainer.resume(tmp_path / "run", overrides={"train.time_limit_s": -1}, progress=False)


def test_linear_schedule_ends_with_the_wall_clock_budget(tmp_path: Path) -> None:
    """A run that the time limit stops (long before its step budget) still anneals its learning rate to ~0."""
    train = {**TINY["train"], "total_steps": 1e9, "time_limit_s": 3.0, "lr": 1e-3, "lr_schedule": "linear"}
    summary = Trainer.create(validate({**TINY, "train": train}), tmp_path / "run", progress=False).train()
    assert summary["stopped_by"] == "time_limit"
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] > 0.9e-3 and lrs[-1] < 0.15e-3 and all(np.diff(lrs) <= 0)


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("data", "fields"),
    [
        ({"train": {"lr": -1}}, ["train.lr"]),
        ({"env": {"num_drones": 0}, "algo": "qmix"}, ["env.num_drones", "algo"]),
        ({"env": {"name": "drone-hovr"}}, ["env.name", "registered are"]),
        ({"train": {"gama": 0.9}}, ["train.gama", "unknown field"]),
        ({"env": {"action_type": "thrust"}}, ["env.action_type"]),
        ({"env": {"args": {"ctrl_freq": 7}}}, ["env", "ctrl_freq"]),
        ({"env": {"args": {"seed": 1}}}, ["env.args", "set by the run"]),
        ({"perturbations": "obs.gaussian(sdt=0.1)"}, ["perturbations", "sdt"]),
        ({"env": {"num_envs": 2}, "train": {"rollout_steps": 2, "minibatches": 8}}, ["train.minibatches"]),
        ({"policy": {"hidden": [64, 0]}}, ["policy.hidden"]),
        ({"perturbations": "obs.gaussian(std=0.1,agents=[7])"}, ["perturbations", "agent"]),
        ({"perturbations": "adv.pgd(eps=0.1,objective=critic)"}, ["perturbations", "action_critic"]),
        ({"perturbations": "agents.malicious(rate=0.1,mode=adversarial)"}, ["perturbations", "team_critic"]),
        ({"train": {"total_steps": float("inf")}}, ["train.total_steps"]),
    ],
)
def test_bad_config_is_rejected_with_the_field_named(data: dict, fields: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        validate(data)
    for field in fields:
        assert field in str(err.value)


def test_config_round_trips_through_the_run_directory(tmp_path: Path) -> None:
    config = validate({**TINY, "train": {**TINY["train"], "total_steps": 8 * 16}, "seed": 7})
    Trainer.create(config, tmp_path / "run", progress=False).train()
    assert load(tmp_path / "run" / "config.yaml") == config
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(bad)


def test_cli_train_rejects_a_bad_config_and_trains_a_good_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sim2real.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--set", "train.clip=3", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "train.clip" in bad.output
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "good"
    args = [
        "train",
        "--num-drones",
        "1",
        "--num-envs",
        "8",
        "--steps",
        "256",
        "--set",
        "train.rollout_steps=16",
        "--set",
        "eval_episodes=2",
        "--out",
        str(out),
        "--no-progress",
    ]
    good = runner.invoke(app, args)
    assert good.exit_code == 0, good.output
    assert "eval (2 episodes)" in good.output
    assert load(out / "config.yaml").env.num_drones == 1
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--seed", "0"])
    assert resumed.exit_code == 2 and "--seed" in resumed.output


# ---------------------------------------------------------------------------------------------- evaluation
def test_evaluation_is_deterministic_and_runs_on_both_backends() -> None:
    from sim2real.envs import make

    env = make("drone-hover", num_drones=2)
    rel_target, target_vel = env.obs_field("rel_target"), env.obs_field("target_vel")

    def policy(obs: np.ndarray) -> np.ndarray:
        """Scripted velocity commands toward the target (the drones start far enough apart not to meet)."""
        return np.clip(1.5 * obs[..., rel_target] + obs[..., target_vel], -1.0, 1.0)

    kwargs = {"num_drones": 2, "episode_len_s": 4.0}
    first = evaluate(policy, "drone-hover", kwargs, episodes=6, seed=3, max_envs=4)
    again = evaluate(policy, "drone-hover", kwargs, episodes=6, seed=3, max_envs=4)
    assert first.returns == again.returns and len(first.returns) == 6
    batched = evaluate(policy, "drone-hover", kwargs, episodes=2, seed=3).summary()
    pyb = evaluate(policy, "drone-hover", kwargs, episodes=2, seed=3, backend="pybullet").summary()
    for summary in (batched, pyb):
        assert summary["mean_position_error_m"] < 0.1
        assert summary["collisions"] == 0 and summary["mean_episode_length"] == 120
    assert pyb["mean_return"] == pytest.approx(batched["mean_return"], rel=0.05)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(policy, "drone-hover", kwargs, episodes=0)
