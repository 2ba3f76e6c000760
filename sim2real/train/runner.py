"""The training runner: rollouts on the batched backend, updates, logging, checkpoints and resume.

A run lives in one directory::

    runs/NAME/
      config.yaml          the resolved config (every field)
      metrics.jsonl        one JSON line per update (and TensorBoard events under tb/ when installed)
      checkpoints/         update_000050.pt ... (learner, optimisers, normalisers, RNG and env state)
      summary.json         written at the end: steps, wall-clock, final evaluation

Checkpoints hold the complete training state, the env's included (the batched env is plain numpy and is
pickled), so a resumed run continues exactly where it stopped: the same parameters as an uninterrupted run.
Ctrl-C (SIGINT) or SIGTERM finishes the current update, saves a checkpoint and stops; a second Ctrl-C
aborts at once.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from sim2real import __version__
from sim2real.config import RunConfig, set_field, validate
from sim2real.config import load as load_config
from sim2real.config import save as save_config
from sim2real.envs import make
from sim2real.eval.rollout import evaluate, live_mean
from sim2real.train.buffer import RolloutBuffer, gae
from sim2real.train.hooks import TrainingHook
from sim2real.train.mappo import MAPPO
from sim2real.train.robust import make_hooks

CHECKPOINT_DIR = "checkpoints"
EPISODE_KEYS = ("episode_return", "episode_length", "pos_error", "collisions", "coverage")


class RunError(RuntimeError):
    """A run directory that cannot be created, resumed or loaded; the message says why."""


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("update_*.pt"))


def resolve_checkpoint(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """``checkpoint`` if given (a file in the run's ``checkpoints/``), else the run's latest; RunError otherwise."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise RunError(f"{run_dir} is not a run directory (no config.yaml)")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise RunError(f"no checkpoint file {checkpoint}")
        if path.resolve().parent != (run_dir / CHECKPOINT_DIR).resolve():
            raise RunError(f"{checkpoint} is not one of {run_dir}'s checkpoints (in {run_dir / CHECKPOINT_DIR})")
        return path
    found = checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir} has no checkpoint yet")
    return found[-1]


class LoadedRun(NamedTuple):
    """A trained learner with its config and the checkpoint it came from."""

    learner: MAPPO
    config: RunConfig
    checkpoint: Path
    update: int
    env_steps: int


class Trainer:
    """Trains one run. Use :meth:`Trainer.create` for a new run and :meth:`Trainer.resume` to continue one.

    Args:
        config: the validated run config.
        run_dir: the run directory.
        hooks: extra plug-ins, after those of the config's ``robust.method``.
        progress: show a progress bar.
    """

    def __init__(
        self, config: RunConfig, run_dir: Path, *, hooks: list[TrainingHook] | None = None, progress: bool = True
    ) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        env = make(
            config.env.name,
            num_envs=config.env.num_envs,
            backend="batched",
            seed=config.seed,
            **config.env.make_kwargs(),
        )
        self.state_dim: int | None = getattr(env, "state_dim", None)
        hooks = [*make_hooks(config), *(hooks or [])]
        self.learner = MAPPO(
            env.obs_dim, env.num_agents, env.single_action_space, config, state_dim=self.state_dim, hooks=hooks
        )
        if config.perturbations is not None:
            from sim2real import perturb

            env = perturb.apply(env, config.perturbations, seed=config.seed, target=self.learner.attack_target())
        for hook in self.learner.hooks:
            env = hook.wrap_env(env, self.learner, config.seed)
        self.env = env
        self.buffer = RolloutBuffer(
            config.train.rollout_steps,
            env.num_envs,
            env.num_agents,
            env.obs_dim,
            self.learner.act_shape,
            discrete=self.learner.actor.discrete,
            state_dim=self.state_dim if config.algo == "mappo" else None,
        )
        self.update_idx = 0
        self.env_steps = 0
        self.wall_s = 0.0
        self.last_update_s = 0.0
        self.last_episode: dict[str, float] = {}
        obs, info = env.reset(seed=config.seed)
        self._set_obs(obs, info)
        self._stop_requested = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        config: RunConfig,
        run_dir: str | Path,
        *,
        hooks: list[TrainingHook] | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> Trainer:
        """A new run in ``run_dir`` (which must not hold a run unless ``overwrite``); saves ``config.yaml``."""
        run_dir = Path(run_dir)
        if (run_dir / "config.yaml").exists() and not overwrite:
            raise RunError(
                f"{run_dir} already holds a run; continue it with `sim2real train --resume {run_dir}` "
                "or choose another --out"
            )
        trainer = cls(config, run_dir, hooks=hooks, progress=progress)  # fails before anything is written
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*checkpoints(run_dir), run_dir / "metrics.jsonl", run_dir / "summary.json"]:
            stale.unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
        save_config(config, run_dir / "config.yaml")
        return trainer

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        *,
        overrides: dict[str, Any] | None = None,
        hooks: list[TrainingHook] | None = None,
        progress: bool = True,
    ) -> Trainer:
        """Continue the run in ``run_dir`` from its latest checkpoint.

        ``overrides`` may change ``train.total_steps`` and ``train.time_limit_s`` (to train longer).
        """
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").exists():
            raise RunError(f"{run_dir} is not a run directory (no config.yaml); start one with `sim2real train`")
        config = load_config(run_dir / "config.yaml")
        allowed = {"train.total_steps", "train.time_limit_s"}
        for key, value in (overrides or {}).items():
            if key not in allowed:
                raise RunError(f"{key} cannot change on resume; only {sorted(allowed)} can")
            data = config.model_dump(mode="json")
            set_field(data, key, value)
            config = validate(data)
        save_config(config, run_dir / "config.yaml")
        trainer = cls(config, run_dir, hooks=hooks, progress=progress)
        found = checkpoints(run_dir)
        if found:
            trainer.load_checkpoint(found[-1])
        trainer._truncate_metrics()
        return trainer

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Train until ``train.total_steps`` or ``train.time_limit_s``; returns the run summary."""
        cfg = self.config
        total, limit = cfg.train.total_env_steps, cfg.train.time_limit_s
        writer = self._tensorboard()
        bar = tqdm(
            total=total,
            initial=min(self.env_steps, total),
            unit="step",
            unit_scale=True,
            disable=not self.progress,
            desc=cfg.name or self.run_dir.name,
        )
        previous = self._install_signal_handlers()
        stopped_by = "steps"
        try:
            self._stop_requested = False
            while self.env_steps < total:
                if limit is not None and self.wall_s + self.last_update_s > limit:  # the next update would overrun
                    stopped_by = "time_limit"
                    break
                start = time.perf_counter()
                episodes = self._collect()
                collected = time.perf_counter()
                stats = self.learner.update(self.buffer, self._progress(), self.generator)
                self._refresh_target()
                self.update_idx += 1
                self.env_steps += cfg.steps_per_update
                elapsed = time.perf_counter() - start
                stats.update(rollout_s=collected - start, update_s=elapsed - (collected - start))
                self.wall_s += elapsed
                self.last_update_s = elapsed
                record = self._record(stats, episodes, cfg.steps_per_update / elapsed)
                self._log(record, writer)
                bar.update(min(cfg.steps_per_update, total - bar.n))
                bar.set_postfix(self._postfix(record), refresh=False)
                if self.update_idx % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if self._stop_requested:
                    stopped_by = "interrupt"
                    break
        finally:
            self._restore_signal_handlers(previous)
            bar.close()
            if writer is not None:
                writer.close()
        self.save_checkpoint()
        summary = {
            "run": str(self.run_dir),
            "stopped_by": stopped_by,
            "updates": self.update_idx,
            "env_steps": self.env_steps,
            "agent_steps": self.env_steps * self.env.num_agents,
            "wall_clock_s": self.wall_s,
            "env_steps_per_s": self.env_steps / max(self.wall_s, 1e-9),
            "last_episodes": self.last_episode,
            "sim2real_version": __version__,
        }
        if stopped_by != "interrupt" and cfg.eval_episodes > 0:
            result = evaluate(
                self.learner.policy(),
                cfg.env.name,
                cfg.env.make_kwargs(),
                episodes=cfg.eval_episodes,
                seed=10_000 + cfg.seed,
                progress=self.progress,
            )
            summary["eval"] = result.summary()
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _progress(self) -> float:
        """Training progress in [0, 1] for the schedules: the larger of the step and the wall-clock fractions.

        With ``train.time_limit_s`` set, a linear schedule therefore reaches its end when the run stops, whichever
        budget stops it.
        """
        train = self.config.train
        fraction = self.env_steps / train.total_env_steps
        if train.time_limit_s is not None:
            fraction = max(fraction, self.wall_s / train.time_limit_s)
        return min(1.0, fraction)

    def _collect(self) -> dict[str, list[float]]:
        """Fill the rollout buffer (with advantages); returns the metrics of episodes that ended."""
        buf, learner, env, cfg = self.buffer, self.learner, self.env, self.config
        episodes: dict[str, list[float]] = {k: [] for k in EPISODE_KEYS}
        bootstraps: list[tuple[int, np.ndarray, torch.Tensor, torch.Tensor | None]] = []
        for t in range(cfg.train.rollout_steps):
            act_obs = self.obs
            for hook in learner.hooks:
                act_obs = hook.transform_obs(act_obs, learner)
            o = torch.as_tensor(act_obs)
            action, logp = learner.act(o)
            buf.obs[t] = o
            buf.actions[t] = action
            buf.logp[t] = logp
            buf.critic_obs[t] = torch.as_tensor(self.clean_obs)
            if buf.states is not None:
                buf.states[t] = torch.as_tensor(self.state)
            obs, reward, terminated, truncated, info = env.step(action.numpy())
            active = info["active"]
            done = terminated | truncated | ~active | info["done_env"][:, None]
            buf.rewards[t] = torch.as_tensor(reward)
            buf.dones[t] = torch.as_tensor(done, dtype=torch.float32)
            buf.mask[t] = torch.as_tensor(active, dtype=torch.float32)
            if np.any(truncated):
                final_state = None
                if buf.states is not None:
                    if "final_state" not in info:
                        raise RunError("an env with a global state must put info['final_state'] [E, S] on episode ends")
                    final_state = info["final_state"]
                bootstraps.append(
                    (
                        t,
                        truncated,
                        torch.as_tensor(info["final_obs"]),
                        None if final_state is None else torch.as_tensor(final_state, dtype=torch.float32),
                    )
                )
            if np.any(info["done_env"]):
                self._episode_metrics(info, episodes)
            self._set_obs(obs, info)
        buf.critic_obs[-1] = torch.as_tensor(self.clean_obs)
        if buf.states is not None:
            buf.states[-1] = torch.as_tensor(self.state)
        buf.values = learner.values(buf.critic_obs, buf.states)
        gamma = cfg.train.gamma
        for t, truncated, final_obs, final_state in bootstraps:
            tail = learner.values(final_obs, final_state)
            buf.rewards[t] += gamma * tail * torch.as_tensor(truncated, dtype=torch.float32)
        buf.advantages, buf.returns = gae(buf.rewards, buf.values, buf.dones, gamma, cfg.train.gae_lambda)
        return episodes

    def _set_obs(self, obs: np.ndarray, info: dict[str, Any]) -> None:
        """Remember the observations the next step acts on (and the clean ones and the state for the critic)."""
        self.obs = obs
        self.clean_obs = info.get("clean_obs", obs)
        self.state = np.asarray(self.env.global_state(), dtype=np.float32) if self.state_dim is not None else None

    @staticmethod
    def _episode_metrics(info: dict[str, Any], episodes: dict[str, list[float]]) -> None:
        ended = info["done_env"]
        episodes["episode_return"] += info["episode_return"][ended].mean(axis=1).tolist()
        episodes["episode_length"] += info["episode_length"][ended].tolist()
        if "episode_collisions" in info:
            episodes["collisions"] += info["episode_collisions"][ended].sum(axis=1).tolist()
        if "pos_error" in info:
            live_error = live_mean(info["pos_error"][ended], info["active"][ended])
            episodes["pos_error"] += live_error[~np.isnan(live_error)].tolist()
        if "coverage" in info:
            episodes["coverage"] += info["coverage"][ended].tolist()

    # ------------------------------------------------------------------ logging
    def _record(self, stats: dict[str, float], episodes: dict[str, list[float]], sps: float) -> dict[str, Any]:
        for key, values in episodes.items():
            if values:
                self.last_episode[key] = float(np.mean(values))
        return {
            "update": self.update_idx,
            "env_steps": self.env_steps,
            "wall_s": round(self.wall_s, 3),
            "env_steps_per_s": round(sps, 1),
            "episodes": len(episodes["episode_return"]),
            **{k: float(np.mean(v)) for k, v in episodes.items() if v},
            **stats,
        }

    @staticmethod
    def _postfix(record: dict[str, Any]) -> dict[str, str]:
        out = {"sps": f"{record['env_steps_per_s']:.0f}"}
        for key, label, fmt in (
            ("episode_return", "ret", ".1f"),
            ("pos_error", "err", ".3f"),
            ("coverage", "cov", ".2f"),
        ):
            if key in record:
                out[label] = format(record[key], fmt)
        return out

    def _log(self, record: dict[str, Any], writer: Any) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key not in ("update", "env_steps") and isinstance(value, (int, float)) and math.isfinite(value):
                    writer.add_scalar(key, value, record["env_steps"])

    def _tensorboard(self) -> Any:
        """A TensorBoard writer when the ``tensorboard`` package is installed, else None."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def _truncate_metrics(self) -> None:
        """Drop metric lines written after the checkpoint that the run resumes from."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["update"] <= self.update_idx:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):  # a line cut short by a kill
                continue
        path.write_text("".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write the full training state to ``checkpoints/update_NNNNNN.pt`` (atomically); prune old ones."""
        directory = self.run_dir / CHECKPOINT_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"update_{self.update_idx:06d}.pt"
        state = {
            "format": 1,
            "sim2real_version": __version__,
            "update": self.update_idx,
            "env_steps": self.env_steps,
            "wall_s": self.wall_s,
            "last_update_s": self.last_update_s,
            "last_episode": self.last_episode,
            "learner": self.learner.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
            "env": self._pickled_env(),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in checkpoints(self.run_dir)[: -(self.config.keep_checkpoints + 1)]:
            old.unlink()
        return path

    def load_checkpoint(self, path: Path) -> None:
        """Restore the training state saved by :meth:`save_checkpoint`."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file
            raise RunError(f"cannot read checkpoint {path}: {err}") from err
        if not isinstance(state, dict) or state.get("format") != 1:
            raise RunError(f"{path} is not a sim2real training checkpoint")
        self.learner.load_state_dict(state["learner"])
        self.update_idx, self.env_steps, self.wall_s = state["update"], state["env_steps"], state["wall_s"]
        self.last_episode, self.last_update_s = state["last_episode"], state["last_update_s"]
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        # the env state is a pickle (the batched env is plain numpy); checkpoints are trusted files, like the run
        env, obs, info = pickle.loads(state["env"])
        self.env = env
        self._refresh_target()
        self._set_obs(obs, info)

    def _refresh_target(self) -> None:
        """Point attacks in the training env at the current actor and its current normaliser."""
        if hasattr(self.env, "set_target"):
            self.env.set_target(self.learner.attack_target())

    def _pickled_env(self) -> bytes:
        """The env and the observations the next step acts on, pickled (without the attack target's networks)."""
        has_target = hasattr(self.env, "set_target")
        if has_target:
            self.env.set_target(None)
        try:
            return pickle.dumps((self.env, self.obs, {"clean_obs": self.clean_obs}))
        finally:
            if has_target:
                self._refresh_target()

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> dict[int, Any]:
        """Ctrl-C / SIGTERM: stop after the current update; a second Ctrl-C aborts."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.progress:
                tqdm.write("stopping after this update and saving a checkpoint (Ctrl-C again to abort)")

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_learner(run_dir: str | Path, checkpoint: str | Path | None = None) -> LoadedRun:
    """The trained learner of a run (latest checkpoint unless given), for evaluation and export."""
    path = resolve_checkpoint(run_dir, checkpoint)
    config = load_config(Path(run_dir) / "config.yaml")
    env = make(config.env.name, num_envs=1, **config.env.make_kwargs())
    learner = MAPPO(
        env.obs_dim, env.num_agents, env.single_action_space, config, state_dim=getattr(env, "state_dim", None)
    )
    env.close()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        learner.load_state_dict(state["learner"])
    except Exception as err:  # a truncated or foreign file
        raise RunError(f"cannot load checkpoint {path}: {err}") from err
    return LoadedRun(learner, config, path, int(state["update"]), int(state["env_steps"]))
