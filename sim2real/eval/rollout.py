"""Deterministic evaluation: a policy flown for N episodes on either backend, with returns and task metrics.

Episodes run in parallel as the envs of one batched env (rounds of at most ``max_envs``); each env counts its
first episode only. The same policy, env arguments and seed give the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from sim2real.envs import make


@dataclass
class EvalResult:
    """Per-episode values (lists, one entry per episode) and their means.

    Attributes:
        returns: mean over agents of each agent's episode return.
        position_error_m: mean distance [m] of live drones to their targets over the hold window (the last
            ``hold_fraction`` of the time limit); for navigation the target is the goal matched to the drone.
        final_position_error_m: the same at the episode's last step.
        collisions: drone-drone collisions per episode (agents that hit another drone).
        crashes: agents that crashed into the ground or left the arena, per episode.
        goal_coverage: navigation only: fraction of goals covered at the episode's last step.
        lengths: episode lengths [control steps].
    """

    env: str
    backend: str
    episodes: int
    seed: int
    returns: list[float] = field(default_factory=list)
    position_error_m: list[float] = field(default_factory=list)
    final_position_error_m: list[float] = field(default_factory=list)
    collisions: list[int] = field(default_factory=list)
    crashes: list[int] = field(default_factory=list)
    goal_coverage: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    def summary(self) -> dict[str, Any]:
        """Means (and the return's standard deviation) as a flat JSON-ready dict."""
        out: dict[str, Any] = {
            "env": self.env,
            "backend": self.backend,
            "episodes": self.episodes,
            "seed": self.seed,
            "mean_return": self.mean_return,
            "std_return": float(np.std(self.returns)),
            "mean_position_error_m": float(np.nanmean(self.position_error_m)),
            "final_position_error_m": float(np.nanmean(self.final_position_error_m)),
            "collisions": int(np.sum(self.collisions)),
            "episodes_with_collision": int(np.count_nonzero(self.collisions)),
            "crashes": int(np.sum(self.crashes)),
            "mean_episode_length": float(np.mean(self.lengths)),
        }
        if self.goal_coverage:
            out["goal_coverage"] = float(np.mean(self.goal_coverage))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, per-episode lists included."""
        return {**asdict(self), "summary": self.summary()}


def evaluate(
    policy: Callable[[np.ndarray], np.ndarray],
    env_name: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    episodes: int = 32,
    backend: str = "batched",
    seed: int = 0,
    perturbations: Any = None,
    perturb_seed: int | None = None,
    target: Any = None,
    hold_fraction: float = 0.5,
    max_envs: int | None = None,
    progress: bool = False,
) -> EvalResult:
    """Fly ``policy`` for ``episodes`` episodes of ``env_name`` and measure it.

    Args:
        policy: ``obs [E, N, D] float32 -> actions [E, N, A]`` (deterministic for reproducible numbers).
        env_name, env_kwargs: the env, as for ``sim2real.envs.make`` (without ``num_envs``, ``backend``, ``seed``).
        episodes: number of episodes.
        backend: ``batched`` or ``pybullet``.
        seed: env seed of the first round (round ``k`` uses ``seed + k``).
        perturbations: a perturbation spec applied to the env (``sim2real.perturb``), or None.
        perturb_seed: seed of the perturbations (default ``seed``).
        target: the ``AttackTarget`` for adversarial perturbations.
        hold_fraction: the hold window is the last ``hold_fraction`` of the time limit.
        max_envs: envs per round (default 1024 batched, 32 PyBullet).
        progress: show a progress bar.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not 0.0 < hold_fraction <= 1.0:
        raise ValueError(f"hold_fraction must be in (0, 1], got {hold_fraction}")
    kwargs = dict(env_kwargs or {})
    max_envs = max_envs or (1024 if backend == "batched" else 32)
    result = EvalResult(env=env_name, backend=backend, episodes=episodes, seed=seed)
    bar = tqdm(total=episodes, desc=f"eval {backend}", unit="ep", disable=not progress, leave=False)
    done_episodes, round_idx = 0, 0
    while done_episodes < episodes:
        n = min(max_envs, episodes - done_episodes)
        env = make(env_name, num_envs=n, backend=backend, seed=seed + round_idx, **kwargs)
        if perturbations is not None:
            from sim2real import perturb

            p_seed = (seed if perturb_seed is None else perturb_seed) + round_idx
            env = perturb.apply(env, perturbations, seed=p_seed, target=target)
        try:
            _run_round(env, policy, result, hold_fraction, bar)
        finally:
            env.close()
        done_episodes += n
        round_idx += 1
    bar.close()
    return result


def _run_round(env: Any, policy: Callable, result: EvalResult, hold_fraction: float, bar: tqdm) -> None:
    """Run every env of ``env`` to the end of its first episode and append the metrics to ``result``."""
    e = env.num_envs
    hold_start = round(env.max_steps * (1.0 - hold_fraction))
    obs, _ = env.reset()
    finished = np.zeros(e, dtype=bool)
    err_sum, err_count = np.zeros(e), np.zeros(e)
    crashes = np.zeros(e, dtype=np.int64)
    rows: dict[str, np.ndarray] = {}
    for step in range(env.max_steps):
        obs, _, _, _, info = env.step(policy(obs))
        live = info["active"] & ~finished[:, None]
        if step >= hold_start:
            err_sum += np.sum(np.where(live, info["pos_error"], 0.0), axis=1)
            err_count += np.sum(live, axis=1)
        crashes += np.sum((info["crash"] | info["out_of_arena"]) & live, axis=1)
        ended = info["done_env"] & ~finished
        if np.any(ended):
            values = {
                "returns": info["episode_return"].mean(axis=1),
                "final_position_error_m": live_mean(info["pos_error"], info["active"]),
                "collisions": info["episode_collisions"].sum(axis=1),
                "lengths": info["episode_length"],
            }
            if "coverage" in info:
                values["goal_coverage"] = info["coverage"]
            for key, val in values.items():
                rows.setdefault(key, np.zeros(e, dtype=np.asarray(val).dtype))[ended] = np.asarray(val)[ended]
            finished |= ended
            bar.update(int(ended.sum()))
        if np.all(finished):
            break
    hold = np.where(err_count > 0, err_sum / np.maximum(err_count, 1), np.nan)
    result.position_error_m += hold.tolist()
    result.crashes += crashes.tolist()
    for key, val in rows.items():
        getattr(result, key).extend(val.tolist())


def live_mean(values: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Mean over live agents per env ``[E]`` of ``values [E, N]``; NaN where no agent is live."""
    count = live.sum(axis=1)
    return np.where(count > 0, np.where(live, values, 0.0).sum(axis=1) / np.maximum(count, 1), np.nan)
