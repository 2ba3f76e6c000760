"""Typed run configurations: a YAML file (or CLI options) validated into :class:`RunConfig`.

Every field has a default, so ``RunConfig()`` is a complete run (4-drone hover with MAPPO). Unknown keys and
bad values are rejected with :class:`ConfigError`, whose message names the field (``train.lr``) and says
what is allowed. The resolved config is saved as ``config.yaml`` in the run directory; ``--resume`` reads it
back. Units: steps are env steps (one control period of one env, all its agents), times are seconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """An invalid run configuration; the message names every wrong field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EnvConfig(_Strict):
    """The training env: a registered name plus ``make`` arguments."""

    name: str = "drone-hover"
    num_drones: int = Field(4, ge=1, le=256)
    num_envs: int = Field(256, ge=1, le=65536, description="envs stepped together on the batched backend")
    action_type: Literal["vel", "rpm"] | None = Field("vel", description="drone action type; null: the env's own")
    args: dict[str, Any] = Field(default_factory=dict, description="other make() arguments, e.g. ctrl_freq")

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        from sim2real.envs import env_names

        if value not in env_names():
            raise ValueError(f"unknown environment {value!r}; registered are {env_names()}")
        return value

    @field_validator("args")
    @classmethod
    def _no_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = {"num_envs", "num_drones", "action_type", "backend", "seed", "auto_reset"} & set(value)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by the run itself (env fields or --seed), not in env.args")
        return value

    @model_validator(mode="after")
    def _buildable(self) -> EnvConfig:
        from sim2real.envs import make

        try:
            make(self.name, num_envs=1, **self.make_kwargs()).close()
        except (TypeError, ValueError) as err:
            raise ValueError(f"the env rejects these arguments: {err}") from None
        return self

    def make_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``sim2real.envs.make`` (without backend, num_envs and seed)."""
        typed = {} if self.action_type is None else {"action_type": self.action_type}
        return {"num_drones": self.num_drones, **typed, **self.args}


class PolicyConfig(_Strict):
    """Actor and critic networks."""

    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["tanh", "relu", "elu"] = "tanh"
    agent_id: bool = Field(True, description="append a one-hot agent id to the actor's and critic's input")
    init_log_std: float = Field(-0.5, ge=-5.0, le=1.0, description="initial log std of Gaussian actions")
    obs_norm: bool = True
    value_norm: bool = True

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError(f"hidden layer sizes must be >= 1, got {value}")
        return value


class TrainConfig(_Strict):
    """PPO hyperparameters and the run's length."""

    total_steps: float = Field(2e6, gt=0, le=1e13, description="env steps (summed over the envs)")
    time_limit_s: float | None = Field(None, gt=0, description="stop after this wall-clock time [s]")
    rollout_steps: int = Field(32, ge=1, le=4096, description="control steps per env per update")
    epochs: int = Field(5, ge=1, le=100)
    minibatches: int = Field(4, ge=1, le=1024)
    lr: float = Field(1e-3, gt=0, le=1)
    critic_lr: float | None = Field(None, gt=0, le=1, description="default: lr")
    lr_schedule: Literal["constant", "linear"] = "linear"
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0, le=1)
    value_clip: float | None = Field(0.2, gt=0, description="clipped value loss range; null turns it off")
    ent_coef: float = Field(0.0, ge=0)
    ent_coef_end: float | None = Field(None, ge=0, description="linear entropy schedule end; default: ent_coef")
    max_grad_norm: float = Field(0.5, gt=0)
    target_kl: float | None = Field(None, gt=0, description="stop the epochs early above this approximate KL")

    @property
    def total_env_steps(self) -> int:
        return int(self.total_steps)


class ErnieConfig(_Strict):
    """ERNIE / ERNIE-ST (``robust.method: ernie | ernie-st``; Bukharin et al. 2023, Eq. 2-4)."""

    lam: float = Field(0.1, ge=0, description="weight lambda of the regulariser's batch mean in the actor loss")
    eps: float = Field(0.5, gt=0, description="attack radius, normalised observation units")
    steps: int = Field(2, ge=1, le=20, description="projected ascent steps K of the inner attack")
    step_size: float | None = Field(None, gt=0, description="ascent step eta; default 2.5 eps / steps")
    norm: Literal["l2", "linf"] = Field("l2", description="threat ball (ERNIE-ST needs l2)")
    samples: int | None = Field(
        256, ge=1, description="minibatch rows (env steps, all agents) the regulariser sees; null = all"
    )


class AdversarialConfig(_Strict):
    """Adversarial training (``robust.method: adv-pgd``): rollouts on attacked observations."""

    attack: Literal["pgd", "fgsm"] = "pgd"
    eps: float = Field(0.1, gt=0, description="attack budget, normalised observation units")
    steps: int = Field(3, ge=1, le=50, description="PGD steps (step size 2.5 eps / steps)")
    norm: Literal["l2", "linf"] = "linf"
    fraction: float = Field(0.5, ge=0, le=1, description="probability that an env's step is attacked")


class GaussianConfig(_Strict):
    """Gaussian-noise training (``robust.method: gaussian``)."""

    std: float = Field(0.2, gt=0, description="noise standard deviation, normalised observation units")


class DomainRandomizationConfig(_Strict):
    """Domain randomisation (``robust.method: dr``)."""

    spec: Any = Field(None, description="perturbation spec drawn per episode; null = the built-in dynamics ranges")


class RobustConfig(_Strict):
    """The robust-training method and its parameters (docs/robustness.md); only the chosen method's section acts."""

    method: Literal["none", "ernie", "ernie-st", "adv-pgd", "gaussian", "dr"] = "none"
    ernie: ErnieConfig = Field(default_factory=ErnieConfig)
    adv: AdversarialConfig = Field(default_factory=AdversarialConfig)
    gaussian: GaussianConfig = Field(default_factory=GaussianConfig)
    dr: DomainRandomizationConfig = Field(default_factory=DomainRandomizationConfig)

    @model_validator(mode="after")
    def _check(self) -> RobustConfig:
        if self.method == "ernie-st" and self.ernie.norm != "l2":
            raise ValueError(
                "ernie-st needs robust.ernie.norm l2: the sign step of the l-inf ball has no gradient in the "
                "policy parameters, so the Stackelberg term would vanish"
            )
        return self


class RunConfig(_Strict):
    """One training run. ``algo``: ``mappo`` (centralised critic) or ``ippo`` (decentralised critics)."""

    name: str | None = None
    seed: int = Field(0, ge=0, le=2**32 - 1)
    algo: Literal["mappo", "ippo"] = "mappo"
    env: EnvConfig = Field(default_factory=EnvConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    perturbations: Any = Field(None, description="perturbation spec applied to the training env (e.g. DR)")
    checkpoint_every: int = Field(50, ge=1, description="updates between checkpoints")
    keep_checkpoints: int = Field(3, ge=1, description="periodic checkpoints kept besides the latest")
    eval_episodes: int = Field(32, ge=0, description="deterministic evaluation episodes at the end; 0 = none")

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        batch = self.env.num_envs * self.train.rollout_steps
        if self.train.minibatches > batch:
            raise ValueError(
                f"train.minibatches ({self.train.minibatches}) exceeds the rollout batch "
                f"env.num_envs x train.rollout_steps = {batch}"
            )
        if self.perturbations is not None:
            check_training_perturbations(self, self.perturbations, "perturbations")
        if self.robust.method == "dr":
            if self.perturbations is not None:
                raise ValueError(
                    "robust.method dr and perturbations both perturb the training env; put the dynamics ranges into "
                    "robust.dr.spec, or use perturbations alone (method none)"
                )
            if self.robust.dr.spec is not None:
                check_randomization_spec(self.robust.dr.spec)
        return self

    @property
    def steps_per_update(self) -> int:
        """Env steps collected per update (``num_envs * rollout_steps``)."""
        return self.env.num_envs * self.train.rollout_steps

    @property
    def num_updates(self) -> int:
        """Updates needed to reach ``train.total_steps`` (rounded up)."""
        return max(1, math.ceil(self.train.total_env_steps / self.steps_per_update))


def check_randomization_spec(spec: Any) -> None:
    """A domain-randomisation spec draws dynamics only: reject a bad spec or a kind outside ``dynamics.*``."""
    from sim2real import perturb

    try:
        parsed = perturb.parse_spec(spec)
    except perturb.SpecError as err:
        raise ValueError(f"robust.dr.spec: {err}") from None
    others = [p.kind for p in parsed.perturbations if not p.kind.startswith("dynamics.")]
    if others:
        raise ValueError(
            f"robust.dr.spec: domain randomisation draws dynamics.* kinds only, not {others}; "
            "use robust.method gaussian/adv-pgd or perturbations for the others"
        )


def check_training_perturbations(config: RunConfig, spec: Any, where: str) -> None:
    """Bind a training perturbation spec (at ``where`` in the config) to the run's env; reject what it cannot serve.

    Training provides attacks with the actor (``adv.fgsm``/``adv.pgd`` with the divergence objective) but no
    action critic, team critic or learned adversary; those need a robust-training method that brings them.
    """
    from sim2real import perturb
    from sim2real.envs import make

    env = make(config.env.name, num_envs=1, **config.env.make_kwargs())
    try:
        wrapped = perturb.apply(env, spec)
    except perturb.SpecError as err:
        raise ValueError(f"{where}: {err}") from None
    finally:
        env.close()
    for name, need in wrapped.target_needs().items():
        if need != "policy":
            raise ValueError(
                f"{where}: {name} needs an AttackTarget with {need}, which plain training does not "
                "provide; use the divergence objective or a robust-training method that brings one"
            )


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("function-after", "function-before")]
    return ".".join(parts) or "config"


def validate(data: dict[str, Any] | None) -> RunConfig:
    """A :class:`RunConfig` from a plain dict, or :class:`ConfigError` naming each wrong field."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"a run config is a mapping of fields, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as err:
        lines = []
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling; see docs/training.md for the fields)"
            lines.append(f"{_location(e['loc'])}: {msg}")
        raise ConfigError("invalid run config:\n  " + "\n  ".join(lines)) from None


def load(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return validate(data)


def set_field(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted = "a.b"``, creating the nested mappings."""
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def save(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (every field, defaults included)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
