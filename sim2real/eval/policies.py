"""Load a policy to evaluate from a run directory (torch), a deployment bundle or an ONNX file (onnxruntime).

Either way the result is a numpy callable ``obs [E, N, D] -> actions`` plus the env it was trained for, so the
same evaluation code measures the trained network and the file that will be flashed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from sim2real.envs import make


class PolicyLoadError(ValueError):
    """The path is not a run, bundle or policy file, or the policy does not fit its env."""


@dataclass
class LoadedPolicy:
    """A policy ready for :func:`sim2real.eval.evaluate`.

    Attributes:
        act: deterministic ``obs [E, N, D] float32 -> actions [E, N, A]``.
        env_id, env_kwargs: the env the policy was trained for (``make`` arguments without ``num_envs``).
        kind: ``torch`` (a run's checkpoint) or ``onnx`` (an exported file, run by ``OnnxPolicy``).
        source: the path it was loaded from.
        version: which trained parameters: the checkpoint file name (torch) or ``RUN_ID-vMODEL_VERSION`` (onnx).
        target: the ``AttackTarget`` for gradient attacks (torch only; None for ONNX files).
        training: how a torch run was trained: ``{"algo": ..., "robust": the robust config section}``; None
            for ONNX files.
        fit_team_critic: ``(progress: bool) -> (team_critic, fit statistics)``: loads or fits the run's
            joint-action critic that adversarial malicious teammates lower (:mod:`sim2real.train.team_q`);
            None when there is none (ONNX files, discrete actions).
    """

    act: Callable[[np.ndarray], np.ndarray]
    env_id: str
    env_kwargs: dict[str, Any]
    kind: str
    source: str
    version: str
    target: Any = None
    training: dict[str, Any] | None = None
    fit_team_critic: Callable[..., tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, Any]]] | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for result files."""
        return {
            "kind": self.kind,
            "source": self.source,
            ("checkpoint" if self.kind == "torch" else "version"): self.version,
            "env": self.env_id,
            "env_kwargs": self.env_kwargs,
            "training": self.training,
        }


def load_policy(path: str | Path) -> LoadedPolicy:
    """A run directory (``config.yaml`` + checkpoints), a bundle directory (``manifest.json``) or a ``.onnx`` file."""
    path = Path(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        return _load_run(path)
    if (path.is_dir() and (path / "manifest.json").is_file()) or (path.is_file() and path.suffix == ".onnx"):
        return _load_onnx(path)
    if not path.exists():
        raise PolicyLoadError(f"{path} does not exist")
    raise PolicyLoadError(
        f"{path} is neither a run directory (config.yaml), a bundle (manifest.json) nor an .onnx file"
    )


def _load_run(run_dir: Path) -> LoadedPolicy:
    from sim2real.train import RunError, load_learner
    from sim2real.train.team_q import team_critic

    try:
        loaded = load_learner(run_dir)
    except RunError as err:
        raise PolicyLoadError(str(err)) from err
    return LoadedPolicy(
        act=loaded.learner.policy(deterministic=True),
        env_id=loaded.config.env.name,
        env_kwargs=loaded.config.env.make_kwargs(),
        kind="torch",
        source=str(run_dir),
        version=loaded.checkpoint.name,
        target=loaded.learner.attack_target(),
        training={"algo": loaded.config.algo, "robust": loaded.config.robust.model_dump(mode="json")},
        fit_team_critic=None if loaded.learner.actor.discrete else partial(team_critic, loaded),
    )


def _load_onnx(path: Path) -> LoadedPolicy:
    from sim2real.export import OnnxPolicy

    try:
        policy = OnnxPolicy(path)
        env_id, env_kwargs = policy.contract["env_id"], dict(policy.contract["env_params"])
        env = make(env_id, num_envs=1, **env_kwargs)
        try:
            policy.check_env(env, env_id)
        finally:
            env.close()
    except (ValueError, TypeError, FileNotFoundError) as err:  # BundleError and ContractError are ValueErrors
        raise PolicyLoadError(f"{path}: {err}") from err
    version = f"{policy.metadata.get('run_id')}-v{policy.model_version}"
    return LoadedPolicy(policy.act, env_id, env_kwargs, kind="onnx", source=str(path), version=version)
