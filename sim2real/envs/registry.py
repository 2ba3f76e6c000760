"""Registry of environments: ``make(name, ...)`` for the batched API, ``make_parallel`` for PettingZoo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EnvSpec:
    """A registered environment: a factory and the defaults it is listed with."""

    name: str
    factory: Callable[..., Any]
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, EnvSpec] = {}


def register(spec: EnvSpec) -> None:
    """Add an environment; a name can be registered once."""
    if spec.name in _REGISTRY:
        raise ValueError(f"environment {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def env_names() -> list[str]:
    """Registered environment names, sorted."""
    return sorted(_REGISTRY)


def spec(name: str) -> EnvSpec:
    """The spec of a registered environment, or a ValueError naming the registered ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}: registered are {env_names()}")
    return _REGISTRY[name]


def make(name: str, **kwargs: Any) -> Any:
    """Build a batched multi-agent env (``[num_envs, num_agents, ...]`` arrays) by name."""
    s = spec(name)
    return s.factory(**{**s.defaults, **kwargs})


def make_parallel(name: str, **kwargs: Any) -> Any:
    """Build a PettingZoo ``ParallelEnv`` over one env of ``name`` (``num_envs`` is fixed to 1)."""
    from sim2real.envs.pettingzoo_adapter import ParallelSwarmEnv

    if kwargs.get("num_envs", 1) != 1:
        raise ValueError("make_parallel wraps exactly one env: drop num_envs or set it to 1")
    kwargs.pop("num_envs", None)
    return ParallelSwarmEnv(make(name, num_envs=1, auto_reset=False, **kwargs))
