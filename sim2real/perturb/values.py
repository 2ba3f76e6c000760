"""Perturbations of vectors (observations or actions) column by column, and the delivery model of timing faults."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from sim2real.perturb.base import Perturbation, change_norm
from sim2real.perturb.spec import REQUIRED, Param, SpecError

FIELDS = Param(
    "fields", None, "Observation fields or sensors hit (position/pos, velocity, attitude, gyro, ...); none = all."
)
DIMS = Param("ints", None, "Action dimensions hit (motor indices for rpm actions); none = all.", low=0)


class ValuePerturbation(Perturbation, ABC):
    """Changes selected columns of ``x [E, N, D]`` for the hit agents.

    Observation kinds select columns with ``fields``, action kinds with ``dims``. Subclasses implement
    :meth:`transform`, which gets only the selected columns ``[E, N, C]`` (``C = self.width``) and returns
    their perturbed values for every agent, and may keep state in :meth:`setup_state` / :meth:`reset_state`.
    ``self.fresh [E]`` marks envs whose episode just started (their first vector is not seen yet).
    Hits that change nothing are not recorded, unless the transform sets ``self.events [E, N]`` (e.g. a
    dropout that holds an unchanged value is still a drop).
    """

    def setup(self) -> None:
        ctx = self.ctx
        if self.channel == "obs":
            cols = ctx.field_mask(self.p.get("fields"), self.where)
        else:
            cols = np.ones(ctx.act_dim, dtype=bool)
            dims = self.p.get("dims")
            if dims is not None:
                a = ctx.act_dim
                if max(dims) >= a:
                    raise SpecError(f"{self.where}.dims: {dims} but actions have {a} dims (0..{a - 1})")
                cols[:] = False
                cols[dims] = True
        self.idx = None if cols.all() else np.nonzero(cols)[0]
        self.width = int(cols.sum())
        self.fresh = np.ones(ctx.num_envs, dtype=bool)
        self.setup_state()

    def setup_state(self) -> None:
        """Allocate state arrays (``self.width`` selected columns)."""

    def reset(self, env_ids: np.ndarray) -> None:
        super().reset(env_ids)
        self.fresh[env_ids] = True

    def apply(self, x: np.ndarray, episode_step: np.ndarray, global_step: int) -> np.ndarray:
        """Perturbed copy of ``x [E, N, D]``; records the hits with the L2 norm of the change."""
        hit, strength = self.gate(episode_step, global_step)
        self.events = None
        xs = x if self.idx is None else x[..., self.idx]
        perturbed = self.transform(xs, hit, strength)
        self.fresh[:] = False
        new = np.where(hit[..., None], perturbed, xs).astype(x.dtype, copy=False)
        if self.idx is None:
            out = new
        else:
            out = x.copy()
            out[..., self.idx] = new
        change = change_norm(xs, new)
        events = hit & (change > 0) if self.events is None else hit & self.events
        self.record(events, change, episode_step, global_step)
        return out

    @abstractmethod
    def transform(self, x: np.ndarray, hit: np.ndarray, strength: np.ndarray) -> np.ndarray:
        """Perturbed values of the selected columns ``x [E, N, C]`` for every agent (``strength [E]``)."""


class DelayLine:
    """A ring buffer of the last ``length`` vectors per (env, agent); new episodes are filled with their first one."""

    def __init__(self, length: int, shape: tuple[int, ...]) -> None:
        self.buf = np.zeros((length, *shape), dtype=np.float32)
        self.ptr = 0

    def push(self, x: np.ndarray, fresh: np.ndarray) -> None:
        """Store ``x [E, N, D]``; envs flagged ``fresh [E]`` get every slot set to ``x``."""
        self.ptr = (self.ptr + 1) % len(self.buf)
        self.buf[self.ptr] = x
        if fresh.any():
            self.buf[:, fresh] = x[fresh]

    def get(self, age: int | np.ndarray) -> np.ndarray:
        """The vectors pushed ``age`` steps ago (an int, or ``[E, N]`` ages)."""
        if np.isscalar(age):
            return self.buf[(self.ptr - int(age)) % len(self.buf)]
        idx = (self.ptr - np.asarray(age)) % len(self.buf)
        e, n = idx.shape
        return self.buf[idx, np.arange(e)[:, None], np.arange(n)[None, :]]


class Delay(ValuePerturbation):
    """The selected columns show the value from ``steps`` steps earlier (the first value until then)."""

    params = {"steps": Param("int", REQUIRED, "Delay in steps (control periods).", low=1)}

    def setup_state(self) -> None:
        self.line = DelayLine(self.p["steps"] + 1, (self.ctx.num_envs, self.ctx.num_agents, self.width))

    def transform(self, x, hit, strength):
        self.line.push(x, self.fresh)
        return self.line.get(self.p["steps"])


class Gaussian(ValuePerturbation):
    memoryless = True
    params = {"std": Param("float", REQUIRED, "Standard deviation (units of the hit fields).", low=0.0, strength=True)}

    def transform(self, x, hit, strength):
        return x + self.rng.standard_normal(x.shape, dtype=np.float32) * (self.p["std"] * strength)[:, None, None]
